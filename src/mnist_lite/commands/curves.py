"""``mnist-lite curves``: plot a run's loss and accuracy against the step, from its metrics.csv."""

import csv
from pathlib import Path

import yaml

from mnist_lite.errors import UserError


def curves(log_dir: str, output: str | None = None) -> None:
    """Plot a run's loss and accuracy against the training step, from its metrics.csv.

    Args:
        log_dir: a run folder, e.g. lightning_logs/version_0.
        output: the PNG to write; <log_dir>/learning_curves.png when not given.
    """
    from mnist_lite import figures  # matplotlib: only for the commands that draw

    folder = Path(log_dir)
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        if list(folder.glob("events.out.tfevents.*")):
            raise UserError(
                f"{folder} was logged with TensorBoard: curves reads the CSV logger's metrics.csv. "
                f"Use 'tensorboard --logdir {folder}' for this run."
            )
        raise UserError(f"{metrics} does not exist: pass the folder of a run logged with the CSV logger.")
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    fig = figures.learning_curves(rows, _label_smoothing(folder / "config.yaml"))
    print(f"Wrote {figures.save(fig, output or folder / 'learning_curves.png')}")


def _label_smoothing(config: Path) -> float:
    """The run's training label smoothing, from the config.yaml fit saved beside its metrics (0 when unknown)."""
    try:
        value = yaml.safe_load(config.read_text())["model"]["label_smoothing"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return 0.0
    return float(value) if isinstance(value, int | float) else 0.0
