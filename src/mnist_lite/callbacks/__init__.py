"""The Lightning callbacks the CLI adds: the predictions CSV and the pictures written after test."""

from mnist_lite.callbacks.evaluation_report import EvaluationReport
from mnist_lite.callbacks.prediction_writer import CSVPredictionWriter

__all__ = ["CSVPredictionWriter", "EvaluationReport"]
