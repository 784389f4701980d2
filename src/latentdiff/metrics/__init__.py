"""Metrics: Fréchet distance over pluggable features, and the project's own evaluator networks."""

from latentdiff.metrics.classifier import DigitClassifier, classify, load_or_train_classifier
from latentdiff.metrics.frechet import FeatureStats, frechet_distance

__all__ = ["DigitClassifier", "FeatureStats", "classify", "frechet_distance",
           "load_or_train_classifier"]
