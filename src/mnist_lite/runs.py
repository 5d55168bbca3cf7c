"""Run folders: claiming one for each command, and finding runs, their results and their checkpoints again.

Each ``fit`` writes into ``<logs>/version_N``; ``validate``, ``test`` and ``predict`` into ``<run>/<command>``
(then ``<command>_1``, ...) inside the run whose checkpoint they evaluate. A folder is claimed with ``mkdir``,
which fails when it exists, so runs started at the same moment in the same place never share one. Plain files
only: no torch, no Lightning.
"""

import csv
import re
import shlex
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mnist_lite.errors import UserError

LOG_ROOT = Path("lightning_logs")
CONFIG_HEADER = "# mnist-lite "  # the first line of every run's config.yaml: the command that made the run
_SCORE = re.compile(r"val_acc=([0-9.]+?)(?:-v\d+)?\.ckpt$")
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


def resolve_checkpoint(given: str, root: Path = LOG_ROOT) -> Path:
    """``--ckpt_path``: a file as given; ``last``, the newest run's last checkpoint; ``best``, the checkpoint with
    the highest val_acc in any run under ``root`` (the newest on a tie)."""
    if given not in ("last", "best"):
        return Path(given)
    pattern = "last*.ckpt" if given == "last" else "*.ckpt"
    found = [p for p in root.glob(f"*/checkpoints/{pattern}") if p.is_file()]
    if given == "best":
        found = [p for p in found if score(p) is not None]
    if not found:
        what = "last checkpoint" if given == "last" else "checkpoint named with its val_acc"
        raise UserError(f"--ckpt_path {given}: no {what} under {root}/*/checkpoints. Fit a model first.")
    if given == "last":
        return max(found, key=lambda p: p.stat().st_mtime)
    return max(found, key=lambda p: (score(p), p.stat().st_mtime))


@dataclass
class Run:
    """What a run folder says about itself, from the files the run wrote."""

    folder: Path
    started: datetime
    configs: list[str]
    epochs: int | None = None
    val_acc: float | None = None  # the best of the run
    test_acc: float | None = None  # the newest test of the run
    checkpoints: list[str] = field(default_factory=list)

    COLUMNS = ("run", "started", "configs", "epochs", "val_acc", "test_acc", "checkpoints")

    def cells(self) -> list[str]:
        def number(value: float | None) -> str:
            return "" if value is None else f"{value:.4f}"

        return [
            str(self.folder),
            self.started.strftime("%Y-%m-%d %H:%M"),
            " ".join(self.configs) or "-",
            "" if self.epochs is None else str(self.epochs),
            number(self.val_acc),
            number(self.test_acc),
            ", ".join(self.checkpoints),
        ]


def find_runs(root: Path = LOG_ROOT) -> list[Run]:
    """Every fit run under ``root`` (a folder with a config.yaml), newest first."""
    found = []
    for config in root.glob("*/config.yaml"):
        folder = config.parent
        run = Run(folder, datetime.fromtimestamp(config.stat().st_mtime), _configs(config))
        rows = _metrics(folder / "metrics.csv")
        val = [(float(r["val_acc"]), int(r["epoch"])) for r in rows if r.get("val_acc") and r.get("epoch")]
        if val:
            run.val_acc = max(v for v, _ in val)
            run.epochs = max(e for _, e in val) + 1
        tests = sorted((folder.glob("test*/metrics.csv")), key=lambda p: p.stat().st_mtime)
        tested = [float(r["test_acc"]) for r in _metrics(tests[-1]) if r.get("test_acc")] if tests else []
        run.test_acc = tested[-1] if tested else None
        run.checkpoints = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
        found.append(run)
    return sorted(found, key=lambda r: r.started, reverse=True)


def _configs(config: Path) -> list[str]:
    """The --config files named in the command on the config's first line."""
    with open(config) as f:
        first = f.readline()
    if not first.startswith(CONFIG_HEADER):
        return []
    try:
        words = shlex.split(first[len(CONFIG_HEADER) :])
    except ValueError:
        return []
    named = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--config", "-c")]
    return named + [w.split("=", 1)[1] for w in words if w.startswith("--config=")]


def _metrics(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
