"""`conditioning.kind` → the class that implements it, and conditioners built from training data or
checkpoints.

A new kind: a module with a `Conditioner` subclass (see `conditioner.py`), one entry in `KINDS`, and
its name in config.CONDITIONING_KINDS.
"""

from pathlib import Path

from latentdiff.conditioning.classes import ClassTokenConditioner
from latentdiff.conditioning.conditioner import Conditioner
from latentdiff.conditioning.inpainting import InpaintingConditioner
from latentdiff.conditioning.layout import LayoutConditioner
from latentdiff.conditioning.retrieval import RetrievalConditioner
from latentdiff.conditioning.semantic import SemanticConditioner
from latentdiff.conditioning.superres import SuperResConditioner
from latentdiff.conditioning.text import TextConditioner
from latentdiff.config import ConditioningConfig, from_dict, to_dict
from latentdiff.data import ImageData
from latentdiff.errors import UserError

KINDS: dict[str, type[Conditioner]] = {c.kind: c for c in (
    TextConditioner, LayoutConditioner, ClassTokenConditioner, SemanticConditioner, SuperResConditioner,
    InpaintingConditioner, RetrievalConditioner)}


def build_conditioner(cfg: ConditioningConfig, data: ImageData, dataset: str) -> Conditioner | None:
    """The conditioner of cfg.kind for training on `data` (data.dataset=`dataset`): its tokenizer
    learned on (or sized for) the data; None for kind none. One-line errors when the data lacks the
    kind's ground truth."""
    if cfg.kind == "none":
        return None
    KINDS[cfg.kind].check_data(data, dataset)
    if cfg.masked_image or cfg.semantic_embedding:
        raise UserError("conditioning.masked_image / semantic_embedding describe loaded "
                        "original models (SD inpainting, SpatialRescaler); training them is not "
                        "supported: train conditioning.kind=inpaint or semantic without them")
    return KINDS[cfg.kind].from_data(cfg, data)


def conditioner_metadata(conditioner: Conditioner | None) -> dict:
    """What rebuilds the conditioner without the training data: its config, data shape and the
    kind's own part."""
    if conditioner is None:
        return {}
    return {"conditioning_config": to_dict(conditioner.config),
            "semantic_classes": conditioner.semantic_classes,
            "image_channels": conditioner.image_channels, **conditioner.metadata()}


def conditioner_from_metadata(metadata: dict, folder: Path) -> Conditioner | None:
    """The conditioner `conditioner_metadata` described (weights not loaded); `folder`: the
    checkpoint's, where a relative pretrained text encoder folder lies."""
    if "conditioning_config" not in metadata:
        return None
    cfg = from_dict(ConditioningConfig, metadata["conditioning_config"])
    return KINDS[cfg.kind].from_metadata(cfg, metadata, folder)
