"""`latentdiff encode-latents DATA AUTOENCODER OUT`: a dataset's posterior moments under a frozen
first stage, written once to shards (`data/latent_shards.py`) that `latentdiff train` reads with
`data.dataset: latents`.

Shard j holds images j·S … (j + 1)·S − 1 of the dataset's index (S = shard_size) and is written by
process j mod world_size, so the work divides among GPUs and nodes with Fabric's launchers. Each
shard is written atomically: an interrupted run, started again with the same command, encodes only
the shards that are missing. `manifest.json` is written last.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import DataLoader, Dataset

from latentdiff.checkpoints.models import load_autoencoder
from latentdiff.config import EncodeLatentsConfig, TrainConfig, to_dict
from latentdiff.data import to_model_range
from latentdiff.data.latent_shards import FORMAT, MANIFEST, SETTINGS, shard_name
from latentdiff.data.records import DECODE_ERRORS, Records, decode, read_records
from latentdiff.data.stream import collate, resize_crop
from latentdiff.errors import Interrupted, UserError
from latentdiff.metrics.features import state_digest
from latentdiff.files import check_output, write_bytes, write_text
from latentdiff.progress import progress
from latentdiff.train.autoencoder import check_image_size
from latentdiff.train.engine import make_fabric

log = logging.getLogger(__name__)
# the data settings a latents folder depends on (not, e.g., the number of workers)
SOURCE = ("dataset", "path", "channels", "caption_field", "image_field")


def encode_latents(cfg: EncodeLatentsConfig) -> Path:
    """Encode (or complete) the latents folder `cfg.out`; returns its manifest's path."""
    check_output(cfg.out, "the latents folder", kind="folder")
    fabric = make_fabric(TrainConfig(accelerator=cfg.accelerator, devices=cfg.devices,
                                     num_nodes=cfg.num_nodes, strategy=cfg.strategy,
                                     precision="32-true"))
    return fabric.launch(_encode, cfg)


class _Images(Dataset):
    """Record i → {"images": (C, S, S) uint8 centre crop, "ok": whether it decoded, "captions",
    "labels"}."""

    def __init__(self, records: Records, size: int, mode: str):
        self.records, self.size, self.mode = records, size, mode

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        channels = 1 if self.mode == "L" else 3
        try:
            image = resize_crop(decode(self.records.read(i), self.mode), self.size, self.size)
            ok = True
        except DECODE_ERRORS:
            image, ok = torch.zeros(channels, self.size, self.size, dtype=torch.uint8), False
        return {"images": image, "ok": ok,
                "captions": self.records.captions[i] if self.records.captions else "",
                "labels": self.records.label(i)}


def _encode(fabric: Fabric, cfg: EncodeLatentsConfig) -> Path:
    out = Path(cfg.out)
    autoencoder = load_autoencoder(cfg.autoencoder, fabric.device)
    check_image_size(cfg.data, autoencoder.config.downsampling_factor)
    channels = autoencoder.config.in_channels
    records = read_records(cfg.data)
    settings = {"format": FORMAT, "autoencoder": str(cfg.autoencoder),
                "autoencoder_digest": state_digest(autoencoder),
                "image_size": cfg.data.image_size, "channels": channels,
                "flipped": cfg.data.flip, "shard_size": cfg.shard_size, "count": len(records),
                "data": {k: v for k, v in to_dict(cfg.data).items() if k in SOURCE}}
    previous = out / SETTINGS
    if previous.is_file():
        stored = json.loads(previous.read_text())
        changed = sorted(k for k in settings if k != "autoencoder" and stored.get(k) != settings[k])
        if changed:
            raise UserError(f"{out} holds latents made with other settings ({', '.join(changed)}); "
                            "choose another output folder or delete it")
    fabric.barrier()
    if fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        write_text(previous, json.dumps(settings, indent=1))
    fabric.barrier()
    mode = "L" if channels == 1 else "RGB"
    shards = math.ceil(len(records) / cfg.shard_size)
    mine = [j for j in range(fabric.global_rank, shards, fabric.world_size)
            if not (out / shard_name(j)).exists()]
    images, dropped = _Images(records, cfg.data.image_size, mode), 0
    try:
        for j in progress(mine, desc="encoding shards", disable=not fabric.is_global_zero):
            rows = range(j * cfg.shard_size, min((j + 1) * cfg.shard_size, len(records)))
            dropped += _write_shard(out / shard_name(j), autoencoder, images, list(rows), cfg,
                                    fabric.device)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the finished shards are in {out}: run the same command "
                          "again to encode the rest", 130) from None
    if dropped:
        log.warning("skipped %d image(s) that did not decode", dropped)
    fabric.barrier()
    if fabric.is_global_zero:
        _write_manifest(out, settings, shards, records.class_names, bool(records.captions),
                        autoencoder.config.regularizer == "kl")
    fabric.barrier()
    return out / MANIFEST


def _write_shard(path: Path, autoencoder, images: _Images, rows: list[int], cfg: EncodeLatentsConfig,
                 device: torch.device) -> int:
    """Encode the images `rows` into one shard (atomically); returns how many did not decode."""
    loader = DataLoader(images, batch_sampler=[rows[i:i + cfg.batch_size]
                                               for i in range(0, len(rows), cfg.batch_size)],
                        num_workers=cfg.data.workers, collate_fn=collate)
    parts: dict[str, list[torch.Tensor]] = {}
    captions, labels, dropped = [], [], 0
    for batch in loader:
        ok = batch["ok"].bool()
        dropped += int((~ok).sum())
        x = to_model_range(batch["images"][ok]).to(device)
        views = {"": x, "_flipped": x.flip(-1)} if cfg.data.flip else {"": x}
        with torch.no_grad():
            for suffix, view in views.items():
                posterior = autoencoder.encode(view)
                parts.setdefault("mean" + suffix, []).append(posterior.mean.half().cpu())
                if autoencoder.config.regularizer == "kl":
                    parts.setdefault("std" + suffix, []).append(posterior.std.half().cpu())
        captions += [c for c, keep in zip(batch["captions"], ok.tolist()) if keep]
        labels += batch["labels"][ok].tolist()
    tensors = {k: torch.cat(v) for k, v in parts.items() if v}
    if not tensors:  # no image of the shard decoded: an empty shard keeps the numbering
        tensors = {"mean": torch.zeros(0)}
    write_bytes(path, safetensors_bytes(tensors, {"captions": json.dumps(captions),
                                                  "labels": json.dumps(labels),
                                                  "count": str(len(captions))}))
    return dropped


def _write_manifest(out: Path, settings: dict, shards: int, class_names: tuple[str, ...],
                    captioned: bool, has_std: bool) -> None:
    from safetensors import safe_open

    listed, shape = [], None
    for j in range(shards):
        with safe_open(str(out / shard_name(j)), "pt") as f:
            count = int(f.metadata()["count"])
            if count and shape is None:
                shape = list(f.get_slice("mean").get_shape()[1:])
        listed.append({"name": shard_name(j), "count": count})
    total = int(np.sum([s["count"] for s in listed]))
    if total == 0:
        raise UserError(f"no image of {settings['data']['path']} could be encoded; check the data")
    write_text(out / MANIFEST, json.dumps({**settings, "count": total, "latent_shape": shape,
                                           "has_std": has_std, "captions": captioned,
                                           "class_names": list(class_names), "shards": listed},
                                          indent=1))
