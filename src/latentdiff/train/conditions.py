"""The conditions y of a training batch (paper Sec. 3.3): from the dataset's ground truth to a `Cond`, with dropout.

Condition dropout (probability conditioning.drop_prob, drawn from the step's generator) replaces y by the null
condition: the empty prompt/layout for token kinds, zeros for concatenated inputs, the extra class num_classes − 1.
"""

import dataclasses

import torch

from latentdiff.autoencoder import LatentCodec
from latentdiff.conditioning import Cond
from latentdiff.conditioning.conditioner import TOKEN_KINDS, Conditioner
from latentdiff.conditioning.layout import LayoutTokenizer
from latentdiff.conditioning.classes import ClassTokenizer
from latentdiff.conditioning.pretrained import PretrainedText
from latentdiff.conditioning.text import CaptionTokenizer, Tokens
from latentdiff.config import LatentDiffusionTrainConfig
from latentdiff.data import ImageData, to_model_range
from latentdiff.errors import UserError


def build_conditioner(cfg: LatentDiffusionTrainConfig, data: ImageData) -> Conditioner | None:
    """The conditioner for cfg.conditioning.kind, its tokenizer learned on (or sized for) the training data."""
    cc = cfg.conditioning
    needs = {"text": ("captions", bool(data.captions)), "layout": ("boxes", bool(data.boxes)),
             "semantic": ("semantic maps", data.semantic is not None), "class": ("class labels", bool(data.num_classes))}
    if cc.kind in needs and not needs[cc.kind][1]:
        raise UserError(f"conditioning.kind={cc.kind} needs {needs[cc.kind][0]}, which data.dataset="
                        f"{cfg.data.dataset} does not have; use emoji or shapes (text), shapes (layout, semantic)")
    if cc.kind == "none":
        return None
    if cc.masked_image or cc.semantic_embedding:
        raise UserError("conditioning.masked_image / semantic_embedding describe loaded original models (SD "
                        "inpainting, SpatialRescaler); training them is not supported: train conditioning.kind=inpaint "
                        "or semantic without them")
    if cc.kind == "text" and cc.text.pretrained:
        encoder = PretrainedText.from_folder(cc.text.pretrained, cc.text.max_length, cc.text.attend_to_padding)
        return Conditioner(cc, encoder)
    if cc.kind == "text":
        tokenizer = CaptionTokenizer.train(list(data.captions), cc.text.vocab_size, cc.text.max_length)
        return Conditioner(cc, tokenizer)
    if cc.kind == "layout":
        return Conditioner(cc, LayoutTokenizer(len(data.class_names), cc.layout_bins, cc.max_boxes))
    if cc.kind == "class":  # + the null class of classifier-free guidance, last
        return Conditioner(cc, ClassTokenizer(data.num_classes + (1 if cc.drop_prob > 0 else 0)))
    return Conditioner(cc, semantic_classes=data.semantic_classes, image_channels=data.channels)


def random_masks(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, size, size) float masks (1 = generate): one to three random rectangles, each ¼–¾ of the side."""
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (), generator=generator))):
            h, w = (int(v) for v in torch.randint(size // 4, 3 * size // 4 + 1, (2,), generator=generator))
            top, left = (int(torch.randint(0, size - s + 1, (), generator=generator)) for s in (h, w))
            masks[i, :, top:top + h, left:left + w] = 1
    return masks


def token_inputs(conditioner: Conditioner, data: ImageData, index: torch.Tensor) -> list:
    """The prompts (text), box lists (layout, at most max_boxes each) or labels (class) of the images `index`."""
    if conditioner.kind == "text":
        return [data.captions[i] for i in index.tolist()]
    if conditioner.kind == "class":
        return data.labels[index].tolist()
    return [[tuple(b) for b in data.boxes[i][: conditioner.config.max_boxes]] for i in index.tolist()]


def dataset_conditions(conditioner: Conditioner | None, data: ImageData) -> Tokens | Cond | None:
    """The token condition of every image of `data` followed by the null condition (row len(data)), for token
    kinds: tokenised once and indexed every step. With a frozen pretrained encoder, its contexts (encoded once:
    the encoder never changes) as a Cond(context, context_mask); otherwise Tokens for τ_θ."""
    if conditioner is None or conditioner.kind not in TOKEN_KINDS:
        return None
    tokens = conditioner.tokens([*token_inputs(conditioner, data, torch.arange(len(data))), conditioner.null_input()])
    return conditioner.encode(tokens) if conditioner.frozen else tokens


def batch_condition(conditioner: Conditioner | None, data: ImageData, index: torch.Tensor,
                    generator: torch.Generator, codec: LatentCodec, latent_size: tuple[int, int],
                    num_classes: int | None, drop_prob: float, cached: Tokens | Cond | None = None) -> Cond:
    """Cond for the training images `index` (B,), on the CPU: for token kinds a `tokens` Cond (τ_θ runs inside the
    trained network) or, with a frozen encoder, a `context` Cond. `num_classes`: the UNet's (the last is the null
    class when drop_prob > 0), or None. `cached`: `dataset_conditions(conditioner, data)`, made once per run
    (made here when not given)."""
    drop = torch.rand(len(index), generator=generator) < drop_prob
    labels = None
    if num_classes is not None:
        labels = torch.where(drop, num_classes - 1, data.labels[index]) if drop_prob > 0 else data.labels[index]
    if conditioner is None:
        return Cond(class_labels=labels)
    kind = conditioner.kind
    if kind in TOKEN_KINDS:
        cached = dataset_conditions(conditioner, data) if cached is None else cached
        rows = torch.where(drop, len(data), index)  # the last cached row is the null condition
        cond = (Cond(context=cached.context[rows], context_mask=cached.context_mask[rows])
                if isinstance(cached, Cond) else Cond(tokens=cached[rows]))
        return dataclasses.replace(cond, class_labels=labels)
    if kind == "semantic":
        cond = conditioner.spatial(latent_size, semantic=data.semantic[index])
    elif kind == "superres":
        cond = conditioner.spatial(latent_size, lowres=conditioner.degrade(to_model_range(data.images[index]),
                                                                           generator))
    else:  # inpaint: the masked image's latent and the mask
        images = to_model_range(data.images[index])
        masks = random_masks(len(index), images.shape[-1], generator)
        device = next(codec.autoencoder.parameters()).device
        with torch.no_grad():
            masked_latent = codec.encode((images * (1 - masks)).to(device)).cpu()
        cond = conditioner.spatial(latent_size, masked_latent=masked_latent, mask=masks)
    concat = torch.where(drop[:, None, None, None], torch.zeros_like(cond.concat), cond.concat)
    return Cond(class_labels=labels, concat=concat)


def preview_conditions(system, data: ImageData, index: torch.Tensor) -> dict:
    """`generate` keyword arguments that condition on the training images `index`: prompts, layouts, class labels
    (class tokens) or spatial."""
    conditioner = system.conditioner
    if conditioner.kind in TOKEN_KINDS:
        name = {"text": "prompts", "layout": "layouts", "class": "class_labels"}[conditioner.kind]
        return {name: token_inputs(conditioner, data, index)}
    latent_size = (system.image_size // system.codec.downsampling_factor,) * 2
    spatial = batch_condition(conditioner, data, index, torch.Generator().manual_seed(0), system.codec, latent_size,
                              None, 0.0)
    return {"spatial": spatial}
