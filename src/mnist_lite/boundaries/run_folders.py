"""Run folders: claiming one per command (``mkdir``: runs started together never share one), and finding runs, their
results, checkpoints and the runs they resumed; no torch, no Lightning. A run folder is data (anyone may have written
it), read here alone: capped, regular, UTF-8. A bad value is ``unreadable`` (a listing goes on); a bad name, skipped."""

import csv
import io
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mnist_lite.boundaries import files
from mnist_lite.errors import UserError

LOG_ROOT = Path("lightning_logs")
CONFIG_HEADER = "# mnist-lite "  # the first line of every run's config.yaml: the command that made the run
_SCORE = re.compile(r"val_acc=(0(?:\.\d+)?|1(?:\.0+)?)(?:-v\d+)?\.ckpt$")  # an accuracy: 1.2.3 or 9 is no score
MAX_CONFIG_BYTES = 1_000_000  # a run's config.yaml is a few kB
MAX_METRICS_BYTES = 16_000_000  # a metrics.csv of 100 epochs logged at every step is about 8 MB
MAX_METRIC = 1e15  # far above any step, count, loss or accuracy; a plot's axis breaks near float's own limit
MAX_HISTORY = 10  # runs followed back through their resumes: each may hold a metrics.csv of MAX_METRICS_BYTES
LAST_TIME = 253_402_300_799  # 9999-12-31, the last second datetime shows
UNREADABLE = "unreadable"  # the cell of a value its file does not give
CKPT_HELP = (
    "a .ckpt file; 'last' for the newest run's last checkpoint; 'best' for the checkpoint with the highest "
    "val_acc in any run under the log folder (mnist-lite runs lists them)"
)
_YAML = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: safe, and bounds nesting


def claim(parent: Path, stem: str, numbered: bool) -> Path:
    """Create and return a new folder in ``parent``: ``stem_0``, ``stem_1``, ... or ``stem``, ``stem_1``, ..."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in parent.iterdir() if (m := re.fullmatch(rf"{re.escape(stem)}_(\d+)", p.name))]
        index = max(taken, default=-1) + 1 if numbered else None
        while True:
            name = stem if index is None else f"{stem}_{index}"
            try:
                (parent / name).mkdir()
                return parent / name
            except FileExistsError:
                index = 1 if index is None else index + 1
    except OSError as e:
        where = files.printable(e.filename or parent)
        raise UserError(
            f"cannot create {where}: {e.strerror}. Log elsewhere (trainer.logger.init_args.save_dir)."
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


def _read_text(path: Path, limit: int) -> str:
    """A run's file as text; ``FileNotFoundError`` when it is absent, ``Unreadable`` when it cannot be read as one."""
    try:
        return files.read_bytes(path, limit).decode()
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        raise Unreadable(f"{files.printable(path)} is not UTF-8 text") from None
    except (OSError, ValueError) as e:  # a FIFO, a device, a folder; over the cap
        why = f"{path}: {e.strerror}" if isinstance(e, OSError) and e.strerror else str(e)  # str(e) names the path
        raise Unreadable(files.printable(why)) from None


def read_config(folder: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping; ``Unreadable`` for anything else, a YAML nested too deep to load included."""
    path = folder / "config.yaml"
    try:
        value = yaml.load(_read_text(path, MAX_CONFIG_BYTES), Loader=_YAML)
    except (yaml.YAMLError, RecursionError) as e:
        raise Unreadable(f"{files.printable(path)} is not a YAML config ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise Unreadable(f"{files.printable(path)} is not a mapping")
    return value


def resumed_from(folder: Path) -> Path | None:
    """The run a resumed fit went on from: the run folder of its saved ``ckpt_path`` (else that checkpoint itself)."""
    given = read_config(folder).get("ckpt_path")
    if not isinstance(given, str) or not given:
        return None
    run = run_of(Path(given)) or Path(given)
    beside = not run.is_absolute() and run.parent.name == folder.parent.name  # saved relative to where fit ran
    return folder.parent / run.name if beside else run


def history(folder: Path) -> list[Path]:
    """A run and the runs it resumed, oldest first: at most MAX_HISTORY, each once (a chain that loops ends)."""
    chain = [folder]
    while len(chain) < MAX_HISTORY:
        try:
            parent = resumed_from(chain[-1])
            if parent is None or not parent.is_dir() or os.path.realpath(parent) in map(os.path.realpath, chain):
                break
        except (OSError, Unreadable):  # a name too long for the filesystem among them
            break
        chain.append(parent)
    return chain[::-1]


def metric_rows(path: Path, columns: tuple[str, ...]) -> Iterator[dict[str, float]]:
    """Each row of a metrics.csv as the ``columns`` it has a value in; nothing is read until the first row is."""
    rows = csv.DictReader(io.StringIO(_read_text(path, MAX_METRICS_BYTES), newline=""))
    try:
        for row in rows:
            yield {key: _number(key, cell) for key in columns if (cell := row.get(key))}
    except (csv.Error, ValueError) as e:
        raise Unreadable(f"{files.printable(path)}, line {rows.line_num}: {e}") from None


def _number(key: str, cell: str) -> float:
    value = int(cell) if key in ("step", "epoch") else float(cell)
    if not abs(value) < MAX_METRIC:  # NaN too; an exact comparison, where math would overflow on a long integer
        raise ValueError(f"{key} {cell[:20]!r} is not a number a run logs")
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
    """``--ckpt_path`` as a file: as given, or ``last``/``best`` under ``root`` as in CKPT_HELP (newest on a tie)."""
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


def find_runs(root: Path = LOG_ROOT) -> list[dict[str, Any]]:
    """Every fit run under ``root`` (a folder with a config.yaml), newest first, as ``mnist-lite runs``'s columns."""
    found = []
    for config in root.glob("*/config.yaml"):
        folder = config.parent
        started = datetime.fromtimestamp(min(max(_mtime(config), 0), LAST_TIME))  # tmpfs stores any time
        run = {"run": folder, "started": started, "checkpoints": checkpoints(folder)}
        run |= _columns(("configs", "overrides"), _command, folder)
        run |= _columns(("resumed",), lambda folder: (resumed_from(folder),), folder)
        run |= _columns(("parameters", "val_acc", "epochs"), _summary, folder / "metrics.csv")
        run |= _columns(("test_acc",), _newest_test_acc, folder)
        found.append(run)
    return sorted(found, key=lambda run: run["started"], reverse=True)


def _columns(names: tuple[str, ...], read: Callable[[Path], tuple[Any, ...]], path: Path) -> dict[str, Any]:
    """``read(path)``'s values under ``names``: None when its file is absent, UNREADABLE when it is bad."""
    try:
        values = read(path)
    except FileNotFoundError:
        values = (None,) * len(names)
    except (OSError, ValueError):  # Unreadable
        values = (UNREADABLE,) * len(names)
    return dict(zip(names, values))


def _command(folder: Path) -> tuple[list[str], list[str]]:
    """The config files a run's command named, and its overrides: what its command line set on top of them."""
    first = _read_text(folder / "config.yaml", MAX_CONFIG_BYTES).split("\n", 1)[0]
    try:
        words = shlex.split(first.removeprefix(CONFIG_HEADER)) if first.startswith(CONFIG_HEADER) else []
    except ValueError:  # an unclosed quote
        words = []
    options: list[list[str]] = []  # [key, value]: from --key=value, --key value and -c value
    for word in words:
        if word.startswith("--") or word == "-c":
            options.append(("config" if word == "-c" else word[2:]).split("=", 1))
        elif options and len(options[-1]) == 1:
            options[-1].append(word)
    configs = [option[1] for option in options if option[0] == "config" and len(option) == 2]
    overrides = ["=".join(option) for option in options if option[0] not in ("config", "ckpt_path")]
    return configs, overrides


def _summary(metrics: Path) -> tuple[int | None, float | None, int | None]:
    """A run's parameter count, best val_acc and how many epochs it validated, from its metrics.csv."""
    parameters, best, last = None, None, -1
    for row in metric_rows(metrics, ("parameters", "epoch", "val_acc")):
        if "parameters" in row:
            parameters = round(row["parameters"])  # logged as a float
        if "val_acc" in row and "epoch" in row:
            best, last = max(best or 0.0, row["val_acc"]), max(last, int(row["epoch"]))
    return parameters, best, last + 1 if last >= 0 else None


def _newest_test_acc(folder: Path) -> tuple[float | None]:
    """The test_acc of the newest ``test*`` evaluation of a run."""
    tests = sorted(folder.glob("test*/metrics.csv"), key=_mtime)
    test_acc: float | None = None
    for row in metric_rows(tests[-1], ("test_acc",)) if tests else ():
        test_acc = row.get("test_acc", test_acc)
    return (test_acc,)
