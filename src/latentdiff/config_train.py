"""Typed configuration of the data and the optimisation loop that every training command shares
(re-exported by `config`)."""

from dataclasses import dataclass, field

from latentdiff.config_files import check as _check


# read record by record in DataLoader workers (`data/stream.py`), never held in memory
STREAMED = ("webdataset", "hf", "latents")
DATASETS = ("digits", "photos", "emoji", "shapes", "mnist", "folder", *STREAMED)


@dataclass(frozen=True)
class DataConfig:
    """A dataset of images (and optional class labels) with a seeded held-out split for evaluation.

    dataset: "digits" (scikit-learn's 1,797 8×8 digits, bundled), "photos" (crops of the photographs
    bundled with scikit-image/scikit-learn, with a spatially disjoint held-out split), "emoji" (Noto
    Color Emoji glyphs with their names as captions; `path` may name the font file), "shapes"
    (procedural coloured shapes with captions, boxes and semantic maps), "mnist" (IDX or .npz files
    at `path`), or "folder" (PNG/JPEG files under `path`; sub-folders become classes; captions from
    metadata.jsonl / metadata.csv or sidecar .txt files), "webdataset" (tar shards at `path`: a brace
    pattern, glob, folder or URL) or "hf" (a Hugging Face `datasets` folder or parquet files at
    `path`) or "latents" (the folder `latentdiff encode-latents` wrote). Images are resized
    (photos: cropped) to `image_size`. The last three, and a folder with `stream: true`, are
    streamed (docs/data.md).
    """

    dataset: str = "digits"
    path: str | None = None
    image_size: int = 32
    channels: int | None = None  # None: the dataset's own (digits/mnist 1, folder 3)
    holdout: int = 400  # images held out from training, used by evaluation
    split_seed: int = 0
    # folder: the caption column of metadata.jsonl / metadata.csv (sidecar .txt files need none);
    # webdataset: the key of the .json member when a sample has no .txt; hf: the caption column
    caption_field: str = "text"
    # hf: the image column (default "image"); webdataset: the image extensions (default
    # "jpg;jpeg;png;webp")
    image_field: str | None = None
    # decode images in DataLoader workers instead of holding them in memory (always on for
    # webdataset and hf; `data/stream.py`)
    stream: bool = False
    workers: int = 2  # streamed: DataLoader worker processes per training process (0: none)
    crop: str = "centre"  # streamed: "centre" or "random" crop after the shorter-side resize
    flip: bool = False  # streamed: random horizontal flips (never for captions with left/right)
    buckets: bool = False  # streamed: aspect-ratio buckets of about image_size² pixels

    @property
    def streamed(self) -> bool:
        """Whether images are decoded per batch (`data/stream.py`) rather than held in memory."""
        return self.dataset in STREAMED or (self.dataset == "folder" and self.stream)

    def __post_init__(self):
        _check(self.dataset in DATASETS,
               f"data.dataset={self.dataset!r} is unknown; use digits, photos, emoji, shapes, "
               "mnist, folder, webdataset, hf or latents")
        _check(self.dataset not in ("mnist", "folder", *STREAMED) or self.path,
               f"data.dataset={self.dataset} needs data.path")
        _check(self.crop in ("centre", "random"), f"data.crop={self.crop!r}: use centre or random")
        _check(self.workers >= 0, "data.workers must be ≥ 0")
        _check(not (self.stream or self.buckets or self.flip or self.crop != "centre")
               or self.streamed,
               "data.stream, data.buckets, data.flip and data.crop=random need a streamed dataset: "
               "data.dataset folder (with data.stream: true), webdataset or hf")
        _check(self.image_size >= 1 and self.holdout >= 0,
               "data.image_size must be ≥ 1 and data.holdout ≥ 0")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop shared by both stages (AdamW, linear warm-up, clipping, checkpoints,
    logging)."""

    out_dir: str = "runs/default"
    max_steps: int = 1000
    # also stop (checkpoint, preview) after this much training-loop time; 0: no limit
    max_minutes: float = 0.0
    batch_size: int = 64  # global batch, split evenly across processes
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    # auto: bf16-mixed on GPUs that support it, else 32-true; or any Fabric precision
    precision: str = "auto"
    accelerator: str = "auto"  # auto | cpu | cuda | mps
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # Fabric strategy: auto | ddp | ddp_spawn (fsdp: not yet)
    seed: int = 0
    log_every: int = 50
    sample_every: int = 500  # write a sample grid PNG every N steps (0: only at the end)
    checkpoint_every: int = 500
    # keep every periodic checkpoint as checkpoints/step-NNNNNNN.safetensors too
    keep_checkpoints: bool = False
    # throughput (docs/training.md): torch.compile the network (eager, with a one-line note, where
    # the compiler is missing), channels_last memory format, AdamW's fused kernel (1–7 % off a
    # CPU step here), activations recomputed in the backward pass (less memory, more time)
    compile: bool = False
    channels_last: bool = False
    fused_optimizer: bool = True
    gradient_checkpointing: bool = False
    # gradient accumulation: each process's share of batch_size in this many micro-batches, one
    # backward each (gradients synchronised with the last): the same step in less memory
    accumulate: int = 1

    def __post_init__(self):
        _check(self.max_steps >= 1 and self.batch_size >= 1,
               "train.max_steps and train.batch_size must be ≥ 1")
        _check(self.lr > 0 and self.devices >= 1, "train.lr must be > 0 and train.devices ≥ 1")
        _check(self.max_minutes >= 0, "train.max_minutes must be ≥ 0 (0: no time limit)")
        for name in ("log_every", "sample_every", "checkpoint_every", "warmup_steps"):
            value = getattr(self, name)
            _check(value >= 0, f"train.{name}={value} must be ≥ 0 (0: only at the end / none)")
        _check(self.grad_clip >= 0 and self.weight_decay >= 0,
               "train.grad_clip and train.weight_decay must be ≥ 0")
        _check(all(0 <= b < 1 for b in self.adam_betas),
               f"train.adam_betas={list(self.adam_betas)} must be in [0, 1)")
        _check(self.num_nodes >= 1, "train.num_nodes must be ≥ 1")
        # FSDP shards the weights: the EMA copies and rank 0's checkpoint would see only its shard
        _check("fsdp" not in self.strategy,
               f"train.strategy={self.strategy} is not supported yet (the EMA and the checkpoints "
               "need whole weights); use ddp, with train.accumulate and "
               "train.gradient_checkpointing for memory")
        _check(1 <= self.accumulate <= self.batch_size // (self.devices * self.num_nodes),
               f"train.accumulate={self.accumulate} must be ≥ 1 and at most each process's batch "
               f"({self.batch_size // (self.devices * self.num_nodes)})")
        _check(self.batch_size % (self.devices * self.num_nodes) == 0,
               f"train.batch_size={self.batch_size} must be divisible by devices×num_nodes="
               f"{self.devices * self.num_nodes}")


@dataclass(frozen=True)
class EncodeLatentsConfig:
    """`latentdiff encode-latents DATA AUTOENCODER OUT`: the first stage's posterior moments of every
    image of `data` (centre crops at data.image_size; with data.flip, of the mirrored image too),
    written to shards of `shard_size` images in the folder `out` (`data/latent_shards.py`), in
    batches of `batch_size`, shards shared among the processes of accelerator/devices/num_nodes."""

    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: str = "???"
    out: str = "???"
    batch_size: int = 64
    shard_size: int = 1000
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"

    def __post_init__(self):
        _check(self.batch_size >= 1 and self.shard_size >= 1,
               "batch_size and shard_size must be ≥ 1")
        _check(self.data.dataset in ("folder", "webdataset", "hf"),
               "encode-latents reads images: data.dataset folder, webdataset or hf")
