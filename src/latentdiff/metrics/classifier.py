"""The project's own evaluator for labelled image data (digits, MNIST): a small CNN classifier.

Trained on the training split of the data (never on the held-out split), cached on disk, and used
for (a) accuracy of class-conditional samples and (b) the Fréchet distance in its penultimate
features.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentdiff.cache import cache_dir
from latentdiff.checkpoints.io import load_weights, read_metadata, read_tensors, save_checkpoint
from latentdiff.config import DataConfig, to_dict
from latentdiff.data import ImageData, load_dataset, split_holdout, to_model_range
from latentdiff.errors import UserError

log = logging.getLogger(__name__)
# epochs over the training split, at most max_steps batches (MNIST: 2000 steps ≈ 2.3 epochs, 3 min
# on 2 cores, where 15 epochs take 19 min; the smaller bundled sets stay below the cap and train
# exactly as before)
RECIPE = {"version": 3, "width": 32, "epochs": 15, "max_steps": 2000, "batch_size": 64,
          "lr": 2e-3, "feature_dim": 64,
          "max_shift": 2, "seed": 0}


class DigitClassifier(nn.Module):
    """x (B, C, H, W) in [-1, 1] → logits (B, classes); `features` gives the (B, feature_dim)
    penultimate layer."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 64):
        super().__init__()

        def stage(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        w = RECIPE["width"]
        self.body = nn.Sequential(*stage(channels, w), *stage(w, w), nn.MaxPool2d(2),
                                  *stage(w, 2 * w), nn.MaxPool2d(2),
                                  *stage(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(4 * w, feature_dim))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, feature_dim), before the ReLU (full-rank covariance for the
        FD)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ±max_shift pixels (background-padded), the classifier's only
    augmentation."""
    b, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


# also when called under no_grad (an evaluation that finds no cached evaluator)
@torch.enable_grad()
def train_classifier(train: ImageData, recipe: dict = RECIPE) -> DigitClassifier:
    """The evaluator, a function of the data and the recipe alone: every random draw (initial
    weights, batches, shifts, dropout masks) comes from the recipe's seed, never from the caller's
    global RNG state, so a retrained evaluator is the same network bit for bit (on the same thread
    count; `features.state_digest` tells which)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe["seed"])
        return _train_classifier(train, recipe)


def _train_classifier(train: ImageData, recipe: dict) -> DigitClassifier:
    generator = torch.Generator().manual_seed(recipe["seed"])
    model = DigitClassifier(train.channels, train.num_classes, recipe["feature_dim"])
    steps = min(recipe["max_steps"], recipe["epochs"] * max(1, len(train) // recipe["batch_size"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer,
                                                   max_lr=recipe["lr"], total_steps=steps)
    x_all, y_all = to_model_range(train.images), train.labels
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(train), (recipe["batch_size"],), generator=generator)
        x = _random_shift(x_all[index], recipe["max_shift"], generator)
        loss = F.cross_entropy(model(x), y_all[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def classify(model: DigitClassifier, images: torch.Tensor,
             batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """float images (N, C, H, W) in [-1, 1] → (predicted labels (N,), features (N, d))."""
    labels, features = [], []
    for start in range(0, len(images), batch_size):
        f = model.features(images[start:start + batch_size].float())
        features.append(f)
        labels.append(model.head(f).argmax(1))
    return torch.cat(labels), torch.cat(features)


def load_or_train_classifier(data_cfg: DataConfig, cache: Path | None = None,
                             split: tuple[ImageData, ImageData] | None = None,
                             ) -> tuple[DigitClassifier, float]:
    """The evaluator for this data config (trained on its training split, cached) and its held-out
    accuracy.

    `split`: the (train, held-out) split of `data_cfg` when the caller has already loaded it.
    """
    key = hashlib.sha256(json.dumps([to_dict(data_cfg), RECIPE], sort_keys=True).encode()).hexdigest()[:16]
    path = (cache or cache_dir()) / "evaluators" / f"classifier-{data_cfg.dataset}-{key}.safetensors"
    train, heldout = split or split_holdout(load_dataset(data_cfg),
                                            data_cfg.holdout, data_cfg.split_seed)
    if train.num_classes is None:
        raise ValueError("the classifier evaluator needs labelled data")
    model = DigitClassifier(train.channels, train.num_classes, RECIPE["feature_dim"])
    if path.is_file():
        try:
            load_weights(model, read_tensors(path), str(path))
            return model.eval(), float(read_metadata(path)["heldout_accuracy"])
        except (UserError, KeyError, ValueError) as e:  # a damaged cache is rebuilt, not an error
            log.warning("the cached evaluator %s is unreadable (%s); training it again", path, e)
    log.info("training the evaluator classifier on %d images (cached at %s)", len(train), path)
    model = train_classifier(train)
    predicted, _ = classify(model, to_model_range(heldout.images))
    accuracy = (predicted == heldout.labels).float().mean().item() if len(heldout) else float("nan")
    save_checkpoint(path, model.state_dict(), {"heldout_accuracy": accuracy, "recipe": RECIPE,
                                               "data": to_dict(data_cfg)})
    return model, accuracy
