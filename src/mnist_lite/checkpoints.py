"""Checkpoints: read safely (plain tensors and containers only) and written atomically."""

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from mnist_lite.errors import UserError


def read(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``, so a file can never run code, and check its weights."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: pass the path of a .ckpt written by 'mnist-lite fit'.")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes): it was not written completely.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[-1]
        raise UserError(f"refusing to load {path}: it holds objects other than plain weights ({reason}).") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for truncated or foreign files
        raise UserError(
            f"{path} is not a readable checkpoint: truncated, corrupt or not a PyTorch file "
            f"({type(e).__name__}: {_first_line(e)})."
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a Lightning checkpoint: it has no 'state_dict'.")
    bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UserError(f"{path} has non-finite weights (NaN or inf in {', '.join(bad[:3])}): its run diverged.")
    return checkpoint


def check_fits(model: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Raise a ``UserError`` naming the tensors in which the checkpoint and the model disagree."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    problems = [f"{n} {found[n]} vs {expected[n]}" for n in expected if n in found and found[n] != expected[n]]
    problems += [f"{n} missing" for n in expected if n not in found]
    problems += [f"{n} unexpected" for n in found if n not in expected]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise UserError(f"{path} was saved from a different architecture (checkpoint vs model): {shown}.")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its destination, then renames it into place: a crash or a full disk never
    leaves a half-written ``last.ckpt``. (Lightning's own save renames from the system temp folder, which is only
    atomic when that folder is on the checkpoint's filesystem.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory first, so a full disk shows as the OSError it is
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except OSError as e:
            partial.unlink(missing_ok=True)
            raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}. Free space or log elsewhere.") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"
