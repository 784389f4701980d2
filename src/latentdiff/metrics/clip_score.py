"""CLIP score (Hessel et al. 2021): text-image alignment of generated images under a CLIP model from
local files.

score(x, y) = 100 · max(cos(E_I(x), E_T(y)), 0), averaged over the pairs (the torchmetrics
convention; CLIPScore's w = 2.5 rescales it). Images are brought to CLIP's input as its own image
processor does: resized so the short side is the model's image size (PIL bicubic), centre-cropped,
and normalised with CLIP's mean and std. The model is a `transformers` CLIPModel folder
(config.json, weights, tokenizer files); nothing is downloaded.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentdiff.conditioning.pretrained import import_transformers
from latentdiff.errors import UserError
from latentdiff.metrics.features import as_rgb

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    """`ClipScorer(folder)(images uint8 (N, C, H, W), prompts) → (N,) scores`."""

    def __init__(self, folder: str | Path, device: torch.device | str = "cpu"):
        transformers = import_transformers()
        if not Path(folder).is_dir():
            raise UserError(f"CLIP model folder {folder} does not exist")
        try:
            model = transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True)
            self.model = model.to(device).eval()
            self.tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load a CLIP model from {folder} "
                            f"({str(e).splitlines()[0]}); it needs "
                            "config.json, the weights and the tokenizer files of a "
                            "transformers CLIPModel") from None
        self.device = device
        self.size = self.model.config.vision_config.image_size

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) → CLIP's normalised (N, 3, S, S): the short side to S with PIL's
        bicubic filter, the long side scaled alike (rounded down), the centre S × S crop; as
        CLIPImageProcessor does."""
        h, w = images.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        long = int(self.size * long / short)
        size = (long, self.size) if h <= w else (self.size, long)  # PIL: (width, height)
        top, left = (size[1] - self.size) // 2, (size[0] - self.size) // 2
        out = []
        for image in as_rgb(images):
            resized = Image.fromarray(image.permute(1, 2, 0).numpy()).resize(size, Image.BICUBIC)
            crop = np.asarray(resized)[top:top + self.size, left:left + self.size]
            out.append(torch.from_numpy(crop.copy()).permute(2, 0, 1))
        x = torch.stack(out).float() / 255.0
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str],
                 batch_size: int = 64) -> torch.Tensor:
        if len(images) != len(prompts):
            raise UserError(f"{len(images)} images for {len(prompts)} prompts")
        scores = []
        for start in range(0, len(images), batch_size):
            rows = slice(start, start + batch_size)
            text = self.tokenizer(list(prompts[rows]), padding=True,
                                  truncation=True, return_tensors="pt")
            text = {k: v.to(self.device) for k, v in text.items()}
            text_embeds = embeds(self.model.get_text_features(**text))
            pixels = self.pixels(images[rows]).to(self.device)
            image_embeds = embeds(self.model.get_image_features(pixel_values=pixels))
            scores.append(100.0 * F.cosine_similarity(image_embeds, text_embeds).clamp(min=0).cpu())
        return torch.cat(scores)


def embeds(output) -> torch.Tensor:
    """The projected embeddings: a tensor before transformers 5, the output's pooler_output
    since."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
