"""A frozen pretrained text encoder (as Stable Diffusion uses CLIP's) read from a local Hugging Face
folder.

The folder holds a `transformers` text model and its tokenizer (config.json, model.safetensors,
tokenizer.json …), e.g. a BERT/MiniLM sentence encoder or a CLIP text model. Nothing is downloaded
(local_files_only). The encoder is frozen: its weights stay in the folder, not in latentdiff
checkpoints (which store the folder's path), and training encodes every caption once and caches the
contexts. Needs the optional extra: pip install 'latentdiff[text]'.
"""

import warnings
from pathlib import Path

import torch

from latentdiff.conditioning.tokens import Tokens
from latentdiff.errors import UserError
from latentdiff.files import atomic_folder


def import_transformers():
    """The `transformers` package (an optional extra), quiet; a one-line error naming the extra when
    it is missing."""
    try:
        import transformers
    except ImportError:
        raise UserError("conditioning.text.pretrained needs the transformers package: pip install "
                        "'latentdiff[text]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


class PretrainedText:
    """Prompts → Tokens → per-token hidden states (B, max_length, hidden_size) of a frozen local
    text model.

    Not an nn.Module on purpose: the frozen weights must not enter state dicts, optimisers or EMA
    copies.
    """

    def __init__(self, tokenizer, model, max_length: int, attend_to_padding: bool = False,
                 folder: Path | None = None):
        """`tokenizer` and `model` (a `transformers` tokenizer and text model); `attend_to_padding`:
        every context position is attended to, padding included (Stable Diffusion's
        FrozenCLIPEmbedder), else padding is masked."""
        self.source = model  # the full pretrained model, for save_pretrained
        # CLIPModel → its text tower
        self.model = getattr(model, "text_model", model).eval().requires_grad_(False)
        self.tokenizer, self.max_length, self.attend_to_padding = tokenizer, max_length, attend_to_padding
        self.folder = folder
        self.width = int(self.model.config.hidden_size)

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int,
                    attend_to_padding: bool = False) -> "PretrainedText":
        """The tokenizer and text model of a local Hugging Face folder."""
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"pretrained text encoder folder {folder} has no config.json; give a "
                            "local Hugging Face model folder (config.json, weights, "
                            "tokenizer files)")
        transformers = import_transformers()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load the text encoder in {folder}: "
                            f"{str(e).splitlines()[0]}") from None
        return cls(tokenizer, model, max_length, attend_to_padding, folder)

    def save(self, folder: str | Path) -> Path:
        """Write the tokenizer and the model as a Hugging Face folder that `from_folder` reads (it
        appears whole or not at all; an earlier one is replaced once the new one is complete)."""
        folder = Path(folder)
        with atomic_folder(folder, replace=True) as tmp:
            self.source.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        return folder

    def __call__(self, prompts: list[str]) -> Tokens:
        """Longer prompts are cut to max_length tokens (special tokens included) with a warning."""
        full = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        for prompt, ids in zip(prompts, full):
            if len(ids) > self.max_length:
                warnings.warn(f"prompt {prompt[:40]!r} has {len(ids)} tokens; the context holds "
                              f"{self.max_length}, the last "
                              f"{len(ids) - self.max_length} are dropped", stacklevel=2)
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                               max_length=self.max_length,
                               return_tensors="pt")
        mask = batch["attention_mask"].bool()
        return Tokens(batch["input_ids"], torch.ones_like(mask) if self.attend_to_padding else mask)

    def to(self, device: torch.device | str) -> "PretrainedText":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, tokens: Tokens, batch_size: int = 256) -> torch.Tensor:
        """Tokens (B, L) → last hidden states (B, L, width), in batches."""
        device = next(self.model.parameters()).device
        out = [self.model(input_ids=tokens.ids[i:i + batch_size].to(device),
                          attention_mask=tokens.mask[i:i + batch_size].long().to(device)).last_hidden_state
               for i in range(0, len(tokens.ids), batch_size)]
        return torch.cat(out).float()
