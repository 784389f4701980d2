import numpy as np
import pytest
import torch

from latentdiff.config import DataConfig
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.metrics import FeatureStats, classify, frechet_distance, load_or_train_classifier


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    a = FeatureStats(np.array([0.0, 1.0]), np.diag([1.0, 4.0]), 100)
    b = FeatureStats(np.array([1.0, 1.0]), np.diag([4.0, 1.0]), 100)
    # ‖Δμ‖² + Σ_i (σ_a,i − σ_b,i)²
    assert frechet_distance(a, b) == pytest.approx(1.0 + (1 - 2) ** 2 + (2 - 1) ** 2)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_samples_grows_with_the_shift():
    rng = np.random.default_rng(0)
    ref = FeatureStats.of(rng.normal(size=(2000, 8)))
    near = frechet_distance(FeatureStats.of(rng.normal(size=(2000, 8))), ref)
    far = frechet_distance(FeatureStats.of(rng.normal(size=(2000, 8)) + 0.5), ref)
    assert near < 0.1 < far


def test_classifier_evaluator_is_accurate_and_cached(tmp_path):
    cfg = DataConfig(dataset="digits", image_size=8, holdout=300)
    model, accuracy = load_or_train_classifier(cfg, cache=tmp_path)
    assert accuracy > 0.93
    assert len(list((tmp_path / "evaluators").iterdir())) == 1
    cached, cached_accuracy = load_or_train_classifier(cfg, cache=tmp_path)
    assert cached_accuracy == accuracy
    _, held = split_holdout(load_dataset(cfg), cfg.holdout, cfg.split_seed)
    x = to_model_range(held.images[:50])
    torch.testing.assert_close(classify(model, x)[1], classify(cached, x)[1])
    (path,) = (tmp_path / "evaluators").iterdir()
    # a damaged cache is rebuilt (the same network, bit for bit)
    path.write_bytes(path.read_bytes()[:-100])
    rebuilt, rebuilt_accuracy = load_or_train_classifier(cfg, cache=tmp_path)
    assert rebuilt_accuracy == accuracy and torch.equal(classify(rebuilt, x)[1],
                                                        classify(model, x)[1])


def test_the_evaluator_retrains_to_the_same_network_bit_for_bit():
    """Published numbers compare across reports only if the evaluator is the same network: its
    training draws all randomness (dropout masks included) from its recipe's seed, whatever the
    caller's RNG state."""
    from latentdiff.metrics.classifier import RECIPE, train_classifier
    from latentdiff.metrics.features import state_digest

    train, _ = split_holdout(load_dataset(DataConfig(dataset="digits", image_size=8, holdout=300)),
                             300, 0)
    recipe = {**RECIPE, "max_steps": 30}
    torch.manual_seed(1)
    first = train_classifier(train, recipe)
    torch.manual_seed(2)
    torch.rand(7)
    second = train_classifier(train, recipe)
    assert state_digest(first) == state_digest(second)
    assert torch.initial_seed() == 2  # the caller's RNG is left alone
