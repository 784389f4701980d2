"""`latentdiff eval` on sample quality: FD, KID, precision/recall, density/coverage and the IS
analogue of a model's samples against a real reference set, in one extractor's features, always
beside the real-vs-real baseline.

Reference: the training split of the model's data (or any image set). Baseline: the held-out split
against the same reference, at n_b = min(n, |held-out|) images drawn at random (the data may be
ordered by class); every seed's samples are also scored on their first n_b images so that one FD
column compares like with like (FD and KID are biased at small n). Reference features are cached on
disk under the extractor's identity and a digest of the images, written atomically; what the metrics
need of the reference alone (Gaussian, kernel sums, k-NN radii) is computed once per evaluation.
"""

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from latentdiff.cache import cache_dir
from latentdiff.conditioning.tokens import TokenConditioner
from latentdiff.config import DataConfig
from latentdiff.data import ImageData, load_dataset, split_holdout, to_uint8
from latentdiff.errors import UserError
from latentdiff.files import atomic_write
from latentdiff.ldm import LatentDiffusion
from latentdiff.metrics.distribution import (
    inception_score,
    kernel_inception_distance,
    kernel_row_sums,
    manifold_metrics,
    neighbour_radii,
)
from latentdiff.metrics.classifier import load_or_train_classifier
from latentdiff.metrics.features import FeatureExtractor, choose_extractor
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.pipelines import generate
from latentdiff.pipelines.wavediff import generate_wavediff
from latentdiff.progress import progress
from latentdiff.wavediff import WaveDiff


@dataclass(frozen=True)
class FeatureSet:
    features: np.ndarray  # (N, d) float32
    logits: np.ndarray | None  # (N, k) or None


def cached_features(extractor: FeatureExtractor, images: torch.Tensor, label: str,
                    cache: Path | None = None) -> FeatureSet:
    """Features of uint8 images (N, C, H, W), read from / written to the cache (key:
    extractor + image bytes)."""
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]
    path = (cache or cache_dir()) / "features" / f"{label}-{extractor.identity}-{digest}.npz"
    if path.is_file():
        try:
            stored = np.load(path)
            return FeatureSet(stored["features"], stored.get("logits"))
        # a damaged cache is rebuilt, not an error
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass
    features, logits = extractor(images, progress=f"features of {label} ({len(images)})")
    arrays = {"features": features} if logits is None else {"features": features, "logits": logits}
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return FeatureSet(features, logits)


@dataclass
class Scores:
    """One image set against the reference."""

    n: int
    fd: float
    kid: float
    kid_stderr: float
    precision: float
    recall: float
    density: float
    coverage: float
    inception_score: float | None  # the IS analogue, when the extractor has logits


@dataclass(frozen=True)
class Reference:
    """The real feature set with everything that every comparison against it reuses: its Gaussian,
    the KID kernel row sums (on features divided by `kid_scale`) and its k-NN radii."""

    features: np.ndarray
    stats: FeatureStats
    kid_scale: float
    kid_row_sums: torch.Tensor
    radii: tuple[torch.Tensor, torch.Tensor]  # k = 3 (precision/recall), k = 5 (density/coverage)

    @classmethod
    def of(cls, features: np.ndarray, standard_kid: bool) -> "Reference":
        """`standard_kid` False: KID on features divided by their root-mean-square
        (see `FeatureExtractor`)."""
        kid_scale = 1.0 if standard_kid else float(np.sqrt(np.mean(features.astype(np.float64) ** 2)))
        return cls(features, FeatureStats.of(features), kid_scale,
                   kernel_row_sums(features / kid_scale),
                   tuple(neighbour_radii(features, (3, 5))))

    def score(self, candidate: FeatureSet) -> Scores:
        """All metrics of `candidate` against this reference."""
        kid = kernel_inception_distance(self.features / self.kid_scale,
                                        candidate.features / self.kid_scale,
                                        self.kid_row_sums)
        manifold = manifold_metrics(self.features, candidate.features, 3, 5, self.radii)
        is_mean = None if candidate.logits is None else inception_score(candidate.logits)[0]
        return Scores(len(candidate.features), self.fd(candidate.features), kid.value, kid.stderr,
                      manifold.precision, manifold.recall, manifold.density,
                      manifold.coverage, is_mean)

    def fd(self, features: np.ndarray) -> float:
        return frechet_distance(FeatureStats.of(features), self.stats)


@dataclass
class QualityRow:
    guidance_scale: float
    seeds: list[Scores] = field(default_factory=list)  # at n
    fd_at_baseline_n: list[float] = field(default_factory=list)  # each seed's first n_b samples


@dataclass
class QualityReport:
    extractor: str
    reference: str  # what the reference set is, and its size
    baseline: Scores  # held-out real images vs the reference
    rows: list[QualityRow]

    def table(self) -> str:
        b = self.baseline
        lines = [f"features: {self.extractor}; reference: {self.reference}",
                 (f"n = {self.rows[0].seeds[0].n} samples per seed × "
                  f"{len(self.rows[0].seeds)} seeds (mean ± sd over seeds); real-vs-real baseline: "
                  f"held-out images at n_b = {b.n} "
                  "(KID ± its jackknife standard error)"),
                 "| set | FD | FD at n_b | KID ×10³ | precision | recall | density | coverage | "
                 "IS analogue |",
                 "|---|---|---|---|---|---|---|---|---|",
                 (f"| real held-out (n_b) | – | {b.fd:.3f} | {1e3 * b.kid:.3f} ± "
                  f"{1e3 * b.kid_stderr:.3f} | {b.precision:.3f} | {b.recall:.3f} | "
                  f"{b.density:.3f} | {b.coverage:.3f} | {_is(b.inception_score)} |")]
        for row in self.rows:
            cells = [_spread([s.fd for s in row.seeds]), _spread(row.fd_at_baseline_n),
                     _spread([1e3 * s.kid for s in row.seeds]),
                     *(_spread([getattr(s, name) for s in row.seeds])
                       for name in ("precision", "recall", "density", "coverage"))]
            is_values = [s.inception_score for s in row.seeds]
            cells.append(_is(None if None in is_values else float(np.mean(is_values))))
            lines.append(f"| samples, guidance {row.guidance_scale:g} | {' | '.join(cells)} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _is(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def sample_conditions(model: LatentDiffusion, held: ImageData, n: int) -> dict:
    """`generate` keyword arguments for n samples: balanced class labels, or the held-out captions /
    layouts cycled; nothing for unconditional models."""
    conditioner = model.conditioner
    if model.num_classes:
        k = model.num_classes - (1 if model.trained_with_null else 0)  # the null class is not drawn
        return {"class_labels": (torch.arange(n) % k).tolist()}
    if isinstance(conditioner, TokenConditioner):  # text or layout (class tokens have num_classes)
        rows = torch.arange(n) % len(held)
        return {conditioner.input_name: conditioner.training_inputs(held, rows)}
    if conditioner is not None:
        raise UserError("sample-quality metrics need an unconditional, class, text or layout "
                        f"model; this one is conditioned on {conditioner.kind} (run `latentdiff "
                        f"eval` without --quality for its own report)")
    return {}


def draw_samples(model: LatentDiffusion, n: int, seed: int, conditions: dict, guidance_scale: float,
                 batch_size: int = 250, **sample_options) -> torch.Tensor:
    """n samples as uint8 (n, C, H, W): sample i uses seed seed·n + i and condition i; with a
    progress bar. A WaveDiff model samples with `generate_wavediff`."""
    draw = generate_wavediff if isinstance(model, WaveDiff) else generate
    out = []
    for start in progress(range(0, n, batch_size),
                          desc=f"sampling (seed {seed}, s = {guidance_scale:g})", leave=False):
        rows = slice(start, min(n, start + batch_size))
        chunk = {key: value[rows] for key, value in conditions.items()}
        out.append(to_uint8(draw(model,
                                     list(range(seed * n + rows.start, seed * n + rows.stop)),
                                     guidance_scale=guidance_scale, batch_size=batch_size, **chunk,
                                     **sample_options)).cpu())
    return torch.cat(out)


def evaluate_quality(model: LatentDiffusion, extractor: FeatureExtractor,
                     reference: ImageData, held: ImageData,
                     n: int, seeds: Sequence[int] = (0, 1, 2),
                     guidance_scales: Sequence[float] = (1.0,),
                     reference_label: str = "train", cache: Path | None = None,
                     **sample_options) -> QualityReport:
    """Score n samples per seed and guidance scale against `reference`; `held` gives the baseline
    and the conditions of conditional models."""
    if len(held) < 2 or len(reference) < 2:
        raise UserError("sample-quality metrics need at least 2 reference and 2 held-out images")
    # a random order: its first n_b images and the cycled conditions are representative
    held = held.sample(len(held))
    ref = Reference.of(cached_features(extractor, reference.images, reference_label, cache).features,
                       extractor.standard_kid)
    n_b = min(n, len(held))
    baseline = ref.score(cached_features(extractor, held.images[:n_b],
                                         f"{reference_label}-heldout", cache))
    conditions = sample_conditions(model, held, n)
    report = QualityReport(f"{extractor.name} `{extractor.identity}`",
                           f"{reference_label} ({len(reference)} images)",
                           baseline, [])
    for s in guidance_scales:
        row = QualityRow(float(s))
        for seed in seeds:
            images = draw_samples(model, n, seed, conditions, float(s), **sample_options)
            features, logits = extractor(images, progress=f"features of samples (seed {seed})")
            if features.shape[1] != ref.features.shape[1]:
                raise UserError(f"the samples give {features.shape[1]} features and the "
                                f"reference images {ref.features.shape[1]}: give reference images "
                                "of the model's size and channels")
            row.seeds.append(ref.score(FeatureSet(features, logits)))
            row.fd_at_baseline_n.append(ref.fd(features[:n_b]))
        report.rows.append(row)
    return report


def checkpoint_reference(model: LatentDiffusion, data_cfg: DataConfig, features: str | None = None,
                         inception_weights: str | Path | None = None, resize: str = "clean",
                         device: torch.device | str = "cpu",
                         ) -> tuple[FeatureExtractor, ImageData, ImageData, str]:
    """(extractor, training split, held-out split, label) for a model: the training split of
    `data_cfg` (its own data, or what `latentdiff eval --data` names); `features` as in
    `choose_extractor`, by default the data's classifier evaluator when it is labelled, else
    Inception."""
    data = load_dataset(data_cfg)
    train, held = split_holdout(data, min(data_cfg.holdout, len(data) // 2), data_cfg.split_seed)
    extractor = choose_extractor(features or ("classifier" if train.num_classes else "inception"),
                                 lambda: load_or_train_classifier(data_cfg, split=(train, held))[0],
                                 inception_weights, resize, device)
    return extractor, train, held, f"{data_cfg.dataset}-{data_cfg.image_size}px-train"


def evaluate_checkpoint_quality(model: LatentDiffusion, data_cfg: DataConfig,
                                features: str | None = None,
                                inception_weights: str | Path | None = None, resize: str = "clean",
                                device: torch.device | str = "cpu", n: int | None = None,
                                seeds: Sequence[int] = (0,),
                                guidance_scales: Sequence[float] = (1.0,),
                                **sample_options) -> QualityReport:
    """`latentdiff eval --quality` (reference and extractor as in `checkpoint_reference`).
    Unconditional models sample at guidance 1."""
    extractor, train, held, label = checkpoint_reference(model, data_cfg, features,
                                                         inception_weights, resize, device)
    unconditional = not model.num_classes and model.conditioner is None
    return evaluate_quality(model, extractor, train, held, n or len(held), seeds,
                            [1.0] if unconditional else guidance_scales, label, **sample_options)
