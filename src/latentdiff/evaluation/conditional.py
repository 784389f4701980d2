"""Score a class-conditional model with the classifier evaluator: per-class accuracy and Fréchet
distance, always beside the real-vs-real baseline at the same sample count (the held-out split vs
the training split)."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from latentdiff.config import DataConfig
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.ldm import LatentDiffusion
from latentdiff.metrics.classifier import classify, load_or_train_classifier
from latentdiff.metrics.features import state_digest
from latentdiff.metrics.frechet import FeatureStats, frechet_distance
from latentdiff.pipelines import generate


@dataclass
class ConditionalReport:
    n: int  # samples per seed = held-out images in the baseline
    classifier_heldout_accuracy: float  # the evaluator on real held-out images
    per_class_accuracy: list[float]  # over all seeds
    accuracy: float
    fd: list[float]  # one per sampling seed, generated vs training split
    fd_baseline: float  # held-out real vs training split, same n
    evaluator: str = ""  # the classifier's identity (a digest of its weights)

    def table(self) -> str:
        rows = [f"  class {c}: {a:6.1%}" for c, a in enumerate(self.per_class_accuracy)]
        fd = np.array(self.fd)
        return "\n".join([
            f"evaluator: classifier {self.evaluator} with {self.classifier_heldout_accuracy:.1%} "
            f"accuracy on real held-out images",
            f"class accuracy of generated samples: {self.accuracy:.1%} (n = {self.n} × "
            f"{len(self.fd)} seeds)", *rows,
            f"Fréchet distance (classifier features, n = {self.n}): generated {fd.mean():.3f} ± "
            f"{fd.std():.3f} (seeds: {', '.join(f'{v:.3f}' for v in fd)}), real-vs-real baseline "
            f"{self.fd_baseline:.3f}, ratio {fd.mean() / self.fd_baseline:.2f}"])

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_class_conditional(model: LatentDiffusion, data_cfg: DataConfig,
                               seeds: Sequence[int] = (0, 1, 2),
                               **sample_options) -> ConditionalReport:
    """Draw n = |held-out| balanced class-conditional samples per seed and score them
    (sample_options → generate)."""
    train, heldout = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)
    classifier, classifier_accuracy = load_or_train_classifier(data_cfg, split=(train, heldout))
    reference = FeatureStats.of(classify(classifier, to_model_range(train.images))[1])
    held_features = classify(classifier, to_model_range(heldout.images))[1]
    baseline = frechet_distance(FeatureStats.of(held_features), reference)
    # the data's classes: a model trained with condition dropout counts its null class too
    n, k = len(heldout), model.num_classes - (1 if model.trained_with_null else 0)
    labels = torch.arange(n) % k
    correct, fds = torch.zeros(k), []
    for seed in seeds:
        images = generate(model, seeds=[seed * n + i for i in range(n)],
                          class_labels=labels.tolist(), **sample_options)
        predicted, features = classify(classifier, images)
        correct += torch.bincount(labels[predicted == labels], minlength=k).float()
        fds.append(frechet_distance(FeatureStats.of(features), reference))
    per_class = (correct / (torch.bincount(labels, minlength=k).float() * len(seeds))).tolist()
    return ConditionalReport(n=n, classifier_heldout_accuracy=classifier_accuracy,
                             per_class_accuracy=per_class,
                             accuracy=float(correct.sum() / (n * len(seeds))),
                             fd=fds, fd_baseline=baseline,
                             evaluator=f"classifier-{state_digest(classifier)}")
