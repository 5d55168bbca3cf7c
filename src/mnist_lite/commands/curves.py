"""``mnist-lite curves``: plot a run's loss and accuracy against the step, from its metrics.csv."""

from pathlib import Path

from mnist_lite.boundaries import files
from mnist_lite.boundaries import run_folders as runs
from mnist_lite.errors import UserError

COLUMNS = ("step", "train_loss", "train_loss_epoch", "val_loss", "train_acc", "train_acc_epoch", "val_acc")


def curves(log_dir: str, output: str | None = None) -> None:
    """Plot a run's loss and accuracy against the training step, from its metrics.csv.

    Args:
        log_dir: a run folder, e.g. lightning_logs/version_0; a resumed run is drawn after the runs it went on from.
        output: the PNG to write; <log_dir>/learning_curves.png when not given.
    """
    from mnist_lite.training import figures  # matplotlib: only for the commands that draw

    folder = Path(log_dir)
    if not folder.is_dir():
        raise UserError(f"--log_dir {files.printable(folder)} is not a folder: pass a run (see mnist-lite runs).")
    rows: list[dict[str, float]] = []
    resumed_at: list[float] = []
    for run in reversed(runs.history(folder)):  # newest first: each older run up to where the newer one went on
        try:  # through the run-folder reader: a regular file under its cap, every value a number
            older = [row for row in runs.metric_rows(run / "metrics.csv", COLUMNS) if "step" in row and len(row) > 1]
        except (FileNotFoundError, runs.Unreadable) as e:
            if run != folder:
                break  # an older run's metrics, missing or unreadable, end the history there
            raise UserError(_missing(folder) if isinstance(e, FileNotFoundError) else f"cannot read {e}.") from None
        if not older and run == folder:  # no step was logged yet, or an evaluation's folder (test/, validate/)
            metrics = files.printable(folder / "metrics.csv")
            raise UserError(f"{metrics} holds no training metrics yet (a test/ or validate/ folder holds none).")
        if rows:
            resumed_at.append(rows[0]["step"])
            older = [row for row in older if row["step"] < rows[0]["step"]]
        rows = older + rows
    fig = figures.learning_curves(rows, _label_smoothing(folder), resumed_at)
    print(f"Wrote {files.printable(figures.save(fig, output or folder / 'learning_curves.png'))}")


def _missing(folder: Path) -> str:
    if list(folder.glob("events.out.tfevents.*")):
        tensorboard = f"Use 'tensorboard --logdir {folder}'."
        return f"{folder} was logged with TensorBoard: curves reads the CSV logger's metrics.csv. {tensorboard}"
    return f"{folder / 'metrics.csv'} does not exist: pass the folder of a run logged with the CSV logger."


def _label_smoothing(folder: Path) -> float:
    """The run's training label smoothing, from the config.yaml fit saved beside its metrics (0 when unknown)."""
    try:
        value = runs.read_config(folder)["model"]["label_smoothing"]
    except (OSError, runs.Unreadable, KeyError, TypeError):
        return 0.0
    return float(value) if isinstance(value, int | float) and 0 <= value < 1 else 0.0
