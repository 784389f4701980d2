"""The conditioner: turns y (ground truth while training, user input while sampling) into a `Cond`
(paper Sec. 3.3).

One class per kind of y, each in its own module, owns everything about it: how y is tokenised or
encoded, its null condition for classifier-free guidance, how it is drawn from a training batch
(with condition dropout) and shown in previews, and what of it a checkpoint stores. `Conditioner` is
their common interface:

- token kinds (`tokens.TokenConditioner`): text (`text.TextConditioner`), layouts
  (`layout.LayoutConditioner`), class tokens (`classes.ClassTokenConditioner`): y → tokens → context
  for cross-attention;
- spatial kinds: semantic maps (`semantic.py`), super-resolution (`superres.py`), inpainting
  (`inpainting.py`): y → a (B, k, h, w) input concatenated to z_t.

`kinds.py` maps `conditioning.kind` to the class; adding a kind is one module and one entry there.
"""

from typing import ClassVar

import torch
from torch import nn

from latentdiff.conditioning import Cond
from latentdiff.config import ConditioningConfig
from latentdiff.data import ImageData
from latentdiff.errors import UserError


class Conditioner(nn.Module):
    """y → Cond for one kind. `semantic_classes` and `image_channels` describe the training data
    (stored in checkpoints); the kinds that need them read them."""

    kind: ClassVar[str]
    # (the ImageData field training needs, what it is called)
    needs: ClassVar[tuple[str, str] | None] = None
    # the kind retrieves from the training set: training starts by giving it the training latents
    # (`set_database`), and each step also draws which rows lose their retrieved references
    # (`batch_condition`'s `hide`, with probability conditioning.retrieval.drop_prob)
    retrieves: ClassVar[bool] = False

    def __init__(self, cfg: ConditioningConfig, semantic_classes: int = 0, image_channels: int = 3):
        super().__init__()
        self.config, self.semantic_classes, self.image_channels = cfg, semantic_classes, image_channels

    # --- what the network sees
    @property
    def frozen(self) -> bool:
        """True when nothing of the conditioner is trained (a frozen pretrained text encoder)."""
        return False

    @property
    def context_dim(self) -> int | None:
        """The width of the cross-attention context, None when the kind has none."""
        return None

    @property
    def num_classes(self) -> int | None:
        """The class count (null class included) when y is a class label given as a token."""
        return None

    @property
    def inpaints(self) -> bool:
        """True when the model sees a mask and the masked image's latent (inpainting, or text with
        masked_image)."""
        return self.config.masked_image

    @property
    def restores(self) -> bool:
        """True when the model restores a degraded image (super-resolution): it is scored against
        the original."""
        return False

    def concat_channels(self, latent_channels: int) -> int:
        """k, the channels concatenated to z_t (the UNet's in_channels = latent_channels + k)."""
        return latent_channels + 1 if self.inpaints else 0

    def spatial(self, latent_size: tuple[int, int], **inputs) -> Cond:
        """Cond(concat=…) at `latent_size` from the spatial input the kind takes (semantic=,
        lowres=, or masked_latent= and mask=)."""
        raise UserError(f"this model is conditioned on {self.kind}, not on a spatial input")

    # --- training
    @classmethod
    def check_data(cls, data: ImageData, dataset: str) -> None:
        """A one-line error when the training data lacks this kind's ground truth."""
        if cls.needs is None:
            return
        value = getattr(data, cls.needs[0])
        if value is None or (len(value) == 0 if hasattr(value, "__len__") else not value):
            raise UserError(f"conditioning.kind={cls.kind} needs {cls.needs[1]}, which "
                            f"data.dataset={dataset} does not have; use emoji, shapes or a "
                            "folder with metadata.jsonl / .txt captions (text), shapes (layout, "
                            "semantic)")

    def resume(self, metadata: dict) -> None:
        """Take over what a resumed run's checkpoint `metadata` fixed (a learned vocabulary);
        nothing by default."""

    def set_database(self, latents: torch.Tensor, captions: list[str]) -> None:
        """Given the normalised latents (N, c, h, w) and captions of the training set when training
        starts (a retrieval model's database); nothing by default."""

    def initial_state(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The state to load when a run starts from another model's conditioner weights
        (`init_from`): those weights, by default."""
        return tensors

    def dataset_conditions(self, data: ImageData):
        """What the training loop computes once per run and passes to every `batch_condition`
        (or None)."""
        return None

    def batch_condition(self, data: ImageData, index: torch.Tensor,
                        generator: torch.Generator, codec,
                        latent_size: tuple[int, int], drop: torch.Tensor, cached=None) -> Cond:
        """Cond for the training images `index` (B,) on the CPU; `drop` (B,) bool marks the rows
        that get the null condition (condition dropout); `cached`: `dataset_conditions(data)`."""
        raise NotImplementedError

    def preview_inputs(self, data: ImageData, index: torch.Tensor, codec,
                       latent_size: tuple[int, int]) -> dict:
        """`generate` keyword arguments that condition on the training images `index`."""
        raise NotImplementedError

    # --- checkpoints
    def metadata(self) -> dict:
        """What rebuilds the conditioner without the training data, besides its config
        (see `kinds.py`)."""
        return {}

    @property
    def has_weights(self) -> bool:
        """Whether the conditioner's own weights belong in checkpoints (τ_θ, a class embedding, a
        channel mapper)."""
        return not self.frozen and any(True for _ in self.parameters())


def drop_concat(concat: torch.Tensor, drop: torch.Tensor) -> Cond:
    """Cond(concat) with the dropped rows' inputs zeroed: the null condition of the spatial
    kinds."""
    return Cond(concat=torch.where(drop[:, None, None, None], torch.zeros_like(concat), concat))


class ConditionedUNet(nn.Module):
    """The UNet with τ_θ in front: forward(x, t, tokens=…, **cond) encodes the tokens to a context,
    then runs the UNet. One module, so that the optimiser, DDP and the EMA see the UNet and τ_θ
    together."""

    def __init__(self, unet: nn.Module, conditioner: Conditioner):
        super().__init__()
        self.unet, self.conditioner = unet, conditioner

    @property
    def config(self):
        return self.unet.config

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, tokens=None,
                **cond) -> torch.Tensor:
        if tokens is not None:
            encoded = self.conditioner.encode(tokens)
            cond.update(context=encoded.context, context_mask=encoded.context_mask)
        return self.unet(x, timesteps, **cond)
