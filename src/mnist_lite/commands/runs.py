"""``mnist-lite runs``: the runs under a log folder, from the files they wrote."""

from pathlib import Path
from typing import Any, Literal

from mnist_lite.boundaries import run_folders as run_folders
from mnist_lite.errors import UserError

Column = Literal["started", "run", "configs", "parameters", "epochs", "val_acc", "test_acc"]


def runs(log_dir: str = str(run_folders.LOG_ROOT), sort: Column = "started") -> None:
    """List the runs under a log folder: when, configs, parameters, epochs, val_acc, test_acc, checkpoints.

    Args:
        log_dir: the folder the runs were logged to.
        sort: the column to sort by, highest (or newest) first; a run without a value comes last.
    """
    found = run_folders.find_runs(Path(log_dir))
    if not found:
        raise UserError(f"no runs under {log_dir}: 'mnist-lite fit --config configs/cpu.yaml' makes one.")

    def key(run: run_folders.Run) -> tuple[bool, Any]:
        value = {"run": str(run.folder), "configs": " ".join(run.configs)}.get(sort, getattr(run, sort, None))
        return value is not None, value if value is not None else 0

    rows = [list(run_folders.Run.COLUMNS), *(run.cells() for run in sorted(found, key=key, reverse=True))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
