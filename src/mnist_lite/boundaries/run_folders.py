"""Run folders: claiming one for each command, and finding runs, their results and their checkpoints again.

Each ``fit`` writes into ``<logs>/version_N``; ``validate``, ``test`` and ``predict`` into ``<run>/<command>``
(then ``<command>_1``, ...) inside the run whose checkpoint they evaluate. A folder is claimed with ``mkdir``,
which fails when it exists, so runs started at the same moment in the same place never share one. Plain files
only: no torch, no Lightning.

What a run folder holds is data: the folder may be on a shared filesystem, written by anyone. So every read of one
goes through the readers below, and `runs`, `curves` and ``--ckpt_path best|last`` read runs through them alone:
regular files only, opened without blocking (``files.open_for_reading``), refused above a size cap before they are
read, UTF-8; a value that does not parse makes its cell ``unreadable`` (one bad folder never fails a listing); a
name that does not parse is skipped.
"""

import csv
import functools
import io
import math
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mnist_lite.boundaries import files
from mnist_lite.errors import UserError

LOG_ROOT = Path("lightning_logs")
CONFIG_HEADER = "# mnist-lite "  # the first line of every run's config.yaml: the command that made the run
_SCORE = re.compile(r"val_acc=(\d+(?:\.\d+)?)(?:-v\d+)?\.ckpt$")  # a number: 1.2.3 is no score
MAX_CONFIG_BYTES = 1_000_000  # a run's config.yaml is a few kB
MAX_METRICS_BYTES = 16_000_000  # a metrics.csv of 100 epochs logged at every step is about 8 MB
UNREADABLE = "unreadable"  # the cell of a value its file does not give
T = TypeVar("T")
CKPT_HELP = (
    "a .ckpt file; 'last' for the newest run's last checkpoint; 'best' for the checkpoint with the highest "
    "val_acc in any run under the log folder (mnist-lite runs lists them)"
)


def claim(parent: Path, stem: str, numbered: bool) -> Path:
    """Create and return a new folder in ``parent``: ``stem_0``, ``stem_1``, ... or ``stem``, ``stem_1``, ..."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in parent.iterdir() if (m := re.fullmatch(rf"{re.escape(stem)}_(\d+)", p.name))]
    except OSError as e:
        raise UserError(
            f"cannot create {parent}: {e.strerror}. Log elsewhere (trainer.logger.init_args.save_dir)."
        ) from None
    index = max(taken, default=-1) + 1 if numbered else None
    while True:
        name = stem if index is None else f"{stem}_{index}"
        try:
            (parent / name).mkdir()
            return parent / name
        except FileExistsError:
            index = 1 if index is None else index + 1
        except OSError as e:
            raise UserError(
                f"cannot create {parent / name}: {e.strerror}. Log elsewhere (trainer.logger.init_args.save_dir)."
            ) from None


def release(folder: Path) -> None:
    """Remove a folder a command claimed, if it holds nothing but the config files written at its start."""
    if folder.is_dir() and all(p.name in {"config.yaml", "hparams.yaml"} for p in folder.rglob("*") if p.is_file()):
        shutil.rmtree(folder, ignore_errors=True)


def run_of(ckpt_path: Path) -> Path | None:
    """The run folder a checkpoint was written into (``<run>/checkpoints/x.ckpt``), if it was."""
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None


def score(path: Path) -> float | None:
    """The val_acc in a checkpoint's file name (fit names its best ones ``best-epoch=E-val_acc=A.ckpt``)."""
    match = _SCORE.search(path.name)
    return float(match.group(1)) if match else None


class Unreadable(ValueError):
    """A run's file that is not a regular file, is over its cap, is not UTF-8, or holds a value that does not parse."""


def _read_bytes(path: Path, limit: int) -> bytes:
    """A run's file; ``FileNotFoundError`` when it is absent, ``Unreadable`` when it cannot be read as one."""
    try:
        return files.read_bytes(path, limit)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # a FIFO, a device, a folder; over the cap
        why = f"{path}: {e.strerror}" if isinstance(e, OSError) and e.strerror else str(e)  # str(e) names the path
        raise Unreadable(files.printable(why)) from None


def read_config(folder: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping; ``Unreadable`` for anything else, a YAML nested too deep to load included."""
    path = folder / "config.yaml"
    try:
        value = yaml.safe_load(_read_bytes(path, MAX_CONFIG_BYTES).decode())
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        raise Unreadable(f"{files.printable(path)} is not a YAML config ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise Unreadable(f"{files.printable(path)} is not a mapping")
    return value


def metric_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, float]]:
    """Each row of a metrics.csv as the ``columns`` it has a value in: step and epoch whole numbers, the others
    finite numbers. Decoded row by row from at most MAX_METRICS_BYTES; ``Unreadable`` at a value that does not
    parse. Reads nothing until the first row is asked for."""
    text = io.TextIOWrapper(io.BytesIO(_read_bytes(path, MAX_METRICS_BYTES)), encoding="utf-8", newline="")
    rows = csv.DictReader(text)
    try:
        for row in rows:
            yield {key: _number(key, cell) for key in columns if (cell := row.get(key))}
    except UnicodeDecodeError:  # decoded a block at a time: no line to name
        raise Unreadable(f"{files.printable(path)} is not UTF-8 text") from None
    except (csv.Error, ValueError) as e:
        raise Unreadable(f"{files.printable(path)}, line {rows.line_num}: {e}") from None


def _number(key: str, cell: str) -> float:
    value = int(cell) if key in ("step", "epoch") else float(cell)
    if not math.isfinite(value):
        raise ValueError(f"{key} {cell!r} is not a number")
    return value


def checkpoints(folder: Path) -> list[Path]:
    """The regular files named ``*.ckpt`` in a run's checkpoints folder, by name."""
    return sorted(p for p in (folder / "checkpoints").glob("*.ckpt") if p.is_file())


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # gone since it was listed, or a link to nothing
        return 0.0


def resolve_checkpoint(given: str, root: Path = LOG_ROOT) -> Path:
    """``--ckpt_path``: a file as given; ``last``, the newest run's last checkpoint; ``best``, the checkpoint with
    the highest val_acc in any run under ``root`` (the newest on a tie)."""
    if given not in ("last", "best"):
        return Path(given)
    found = [p for folder in root.glob("*/") for p in checkpoints(folder)]
    if given == "last":
        ranked = [((0.0, _mtime(p)), p) for p in found if p.name.startswith("last")]
    else:
        ranked = [((value, _mtime(p)), p) for p in found if (value := score(p)) is not None]
    if not ranked:
        what = "last checkpoint" if given == "last" else "checkpoint named with its val_acc"
        raise UserError(f"--ckpt_path {given}: no {what} under {root}/*/checkpoints. Fit a model first.")
    return max(ranked, key=lambda r: r[0])[1]


@dataclass
class Run:
    """What a run folder says about itself, from the files the run wrote; a column whose file cannot be read is
    in ``unreadable``, and its value None."""

    folder: Path
    started: datetime
    configs: list[str] = field(default_factory=list)
    parameters: int | None = None  # the network's, as fit logged it
    epochs: int | None = None
    val_acc: float | None = None  # the best of the run
    test_acc: float | None = None  # the newest test of the run
    checkpoints: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)

    COLUMNS = ("run", "started", "configs", "parameters", "epochs", "val_acc", "test_acc", "checkpoints")

    def cells(self) -> list[str]:
        """The row of ``mnist-lite runs``: names from the folder shown with their control characters escaped."""

        def number(value: float | None) -> str:
            return "" if value is None else f"{value:.4f}"

        cells = [
            str(self.folder),
            self.started.strftime("%Y-%m-%d %H:%M"),
            " ".join(self.configs) or "-",
            "" if self.parameters is None else f"{self.parameters:,}",
            "" if self.epochs is None else str(self.epochs),
            number(self.val_acc),
            number(self.test_acc),
            ", ".join(self.checkpoints),
        ]
        return [UNREADABLE if c in self.unreadable else files.printable(v) for c, v in zip(self.COLUMNS, cells)]


def find_runs(root: Path = LOG_ROOT) -> list[Run]:
    """Every fit run under ``root`` (a folder with a config.yaml), newest first."""
    found = []
    for config in root.glob("*/config.yaml"):
        folder = config.parent
        run = Run(folder, datetime.fromtimestamp(_mtime(config)), checkpoints=[p.name for p in checkpoints(folder)])
        run.configs = _read(run, ("configs",), _configs, config) or []
        summary = _read(run, ("parameters", "val_acc", "epochs"), _summary, folder / "metrics.csv")
        run.parameters, run.val_acc, run.epochs = summary or (None, None, None)
        run.test_acc = _read(run, ("test_acc",), _newest_test_acc, folder)
        found.append(run)
    return sorted(found, key=lambda r: r.started, reverse=True)


def _read(run: Run, columns: tuple[str, ...], read: Callable[[Path], T], path: Path) -> T | None:
    """``read(path)``; None when its file is absent, and None with ``columns`` unreadable when it is bad."""
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # Unreadable, or a first line that is not UTF-8
        run.unreadable.update(columns)
        return None


def _summary(metrics: Path) -> tuple[int | None, float | None, int | None]:
    """A run's parameter count, best val_acc and how many epochs it validated, folded row by row from its
    metrics.csv."""
    parameters, best, last = None, None, -1
    for row in metric_rows(metrics, ("parameters", "epoch", "val_acc")):
        if "parameters" in row:
            parameters = round(row["parameters"])  # logged as a float
        if "val_acc" in row and "epoch" in row:
            best, last = max(best or 0.0, row["val_acc"]), max(last, int(row["epoch"]))
    return parameters, best, last + 1 if last >= 0 else None


def _newest_test_acc(folder: Path) -> float | None:
    """The test_acc of the newest ``test*`` evaluation of a run."""
    tests = sorted(folder.glob("test*/metrics.csv"), key=_mtime)
    rows = metric_rows(tests[-1], ("test_acc",)) if tests else iter([])
    return functools.reduce(lambda found, row: row.get("test_acc", found), rows, None)


def _configs(config: Path) -> list[str]:
    """The --config files named in the command on the config's first line."""
    first = _read_bytes(config, MAX_CONFIG_BYTES).decode().split("\n", 1)[0]
    if not first.startswith(CONFIG_HEADER):
        return []
    try:
        words = shlex.split(first[len(CONFIG_HEADER) :])
    except ValueError:
        return []
    named = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--config", "-c")]
    return named + [w.split("=", 1)[1] for w in words if w.startswith("--config=")]
