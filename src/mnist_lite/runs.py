"""Where runs go: each ``fit`` claims ``<logs>/version_N``; ``validate``, ``test`` and ``predict`` write into a folder
named after the command inside the run they evaluate; ``--ckpt_path last|best`` find the newest run's checkpoint.

Folders are claimed with ``mkdir``, which fails when the folder exists, so runs started at the same moment in the
same place never share one (Lightning's loggers pick "the next free version" by listing, then create it later).
"""

import os
import re
import shutil
from pathlib import Path

from mnist_lite.errors import UserError

# Under DDP, Lightning starts ranks 1.. as copies of this command, with rank 0's environment: they join the folder
# rank 0 claimed. Ranks started by torchrun or SLURM claim none; Lightning logs from global rank 0 only.
RUN_DIR_ENV = "MNIST_LITE_RUN_DIR"
_SCORE = re.compile(r"val_acc=([0-9.]+?)(?:-v\d+)?\.ckpt$")


def is_other_rank() -> bool:
    """Whether this process is a DDP rank other than the global rank 0."""
    return any(os.environ.get(name, "0") != "0" for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def claim(parent: Path, stem: str, numbered: bool) -> Path:
    """Create and return a new folder in ``parent``: ``stem_0``, ``stem_1``, ... or ``stem``, ``stem_1``, ..."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create {parent}: {e.strerror}. Log elsewhere (trainer.logger.init_args.save_dir)."
        ) from None
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
            raise UserError(
                f"cannot create {parent / name}: {e.strerror}. Log elsewhere (trainer.logger.init_args.save_dir)."
            ) from None


def evaluation_parent(ckpt_path: Path | None, log_root: Path) -> Path:
    """The run a checkpoint came from (``<run>/checkpoints/x.ckpt``), else the log root."""
    if ckpt_path is not None and ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent
    return log_root


def release(folder: Path) -> None:
    """Remove a folder this command claimed, if it holds nothing but the config files written at start-up."""
    if folder.is_dir() and all(p.name in {"config.yaml", "hparams.yaml"} for p in folder.rglob("*") if p.is_file()):
        shutil.rmtree(folder, ignore_errors=True)


def newest_checkpoint(root: Path, kind: str) -> Path:
    """``kind`` is ``last`` or ``best``: from the run whose checkpoints were written most recently."""
    found = [p for p in root.glob(f"*/checkpoints/{kind}*.ckpt") if p.is_file()]
    if not found:
        raise UserError(f"--ckpt_path {kind}: no {kind}*.ckpt under {root}/*/checkpoints. Fit a model first.")
    run = max(found, key=lambda p: p.stat().st_mtime).parent
    in_run = [p for p in found if p.parent == run]
    if kind == "best":
        return max(in_run, key=lambda p: (_score(p), p.stat().st_mtime))
    return max(in_run, key=lambda p: p.stat().st_mtime)


def checkpoint_path(given: str, root: Path = Path("lightning_logs")) -> Path:
    """A tool's --ckpt_path: a file, or ``last`` / ``best`` for the newest run's, as the trainer subcommands take."""
    if given in ("last", "best"):
        found = newest_checkpoint(root, given)
        print(f"Checkpoint: {found}")
        return found
    return Path(given)


def _score(path: Path) -> float:
    match = _SCORE.search(path.name)
    return float(match.group(1)) if match else float("-inf")
