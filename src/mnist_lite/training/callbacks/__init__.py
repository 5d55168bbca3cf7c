"""The callbacks the CLI adds: the predictions CSV, test's pictures, SLURM's requeue, the checkpoint Ctrl-C leaves."""

from mnist_lite.training.callbacks.evaluation_report import EvaluationReport
from mnist_lite.training.callbacks.interrupt import KeepOnStop
from mnist_lite.training.callbacks.prediction_writer import CSVPredictionWriter
from mnist_lite.training.callbacks.requeue import Requeued, RequeueOnSignal

__all__ = ["CSVPredictionWriter", "EvaluationReport", "KeepOnStop", "RequeueOnSignal", "Requeued"]
