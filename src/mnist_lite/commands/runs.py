"""``mnist-lite runs``: the runs under a log folder, from the files they wrote."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mnist_lite.boundaries import files, run_folders
from mnist_lite.errors import UserError

Column = Literal["started", "run", "configs", "parameters", "epochs", "val_acc", "test_acc"]
SHORT = 40  # characters of the overrides column: each run's config.yaml's first line holds its whole command
COLUMNS: dict[str, Callable[[Any], str]] = {  # each column of the table, and how its values are shown
    "run": str,
    "started": lambda time: time.strftime("%Y-%m-%d %H:%M"),
    "configs": lambda names: " ".join(names) or "-",
    "overrides": " ".join,
    "resumed": str,
    "parameters": "{:,}".format,
    "epochs": str,
    "val_acc": "{:.4f}".format,
    "test_acc": "{:.4f}".format,
    "checkpoints": lambda paths: ", ".join(path.name for path in paths),
}


def runs(log_dir: str = str(run_folders.LOG_ROOT), sort: Column = "started", full: bool = False) -> None:
    """List the runs under a log folder: when, configs, parameters, epochs, val_acc, test_acc, checkpoints.

    Args:
        log_dir: the folder the runs were logged to.
        sort: the column to sort by, highest (or newest) first; a run without a value comes last.
        full: show each run's overrides (what its command line set on top of its config files) in full, not
            shortened to fit. The whole command is the first line of the run's config.yaml.
    """
    found = run_folders.find_runs(Path(log_dir))
    if not found:
        raise UserError(f"no runs under {log_dir}: 'mnist-lite fit --config configs/cpu.yaml' makes one.")
    found.sort(key=lambda run: (_known(run[sort]), run[sort] if _known(run[sort]) else 0), reverse=True)
    rows = [list(COLUMNS), *([_cell(c, run[c], full) for c in COLUMNS] for run in found)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _known(value: Any) -> bool:
    return value is not None and value != run_folders.UNREADABLE


def _cell(column: str, value: Any, full: bool) -> str:
    """A value as ``runs`` shows it: text from the folder with its control characters escaped."""
    if not _known(value):
        return value or ""
    text = files.printable(COLUMNS[column](value))
    return text if full or column != "overrides" or len(text) <= SHORT else text[: SHORT - 1] + "…"
