"""How a checkpoint and a refused value read in one line of the console."""

import reprlib
from pathlib import Path
from typing import Any

import torch

from mnist_lite.boundaries import run_folders as runs

_short = reprlib.Repr()  # a refused value is quoted this short, however large or deep it is
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxdict = _short.maxtuple = 4
_short.maxlevel = 2
shown = _short.repr


def describe(path: Path, checkpoint: dict[str, Any]) -> str:
    """`` (run R, val_acc A)``: the run a checkpoint came from, and its val_acc when it was saved."""
    saved = [
        state.get("current_score")
        for key, state in checkpoint.get("callbacks", {}).items()
        if key.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor") == "val_acc"
    ]
    scores = [float(s) for s in saved if isinstance(s, torch.Tensor) and s.numel() == 1]
    score = runs.score(path) or (scores[0] if scores else None)
    run = runs.run_of(path)
    described = ", ".join(p for p in (run and f"run {run}", score is not None and f"val_acc {score:.4f}") if p)
    return f" ({described})" if described else ""
