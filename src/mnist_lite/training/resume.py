"""Resuming a run: a checkpoint's training state is tried on copies of this run's objects before Lightning restores
it, so whatever they reject is one line naming the section, not a traceback mid-run."""

import copy
import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mnist_lite.boundaries.console import shown
from mnist_lite.errors import UserError, first_line


@contextmanager
def guard(path: str | Path, section: str) -> Iterator[None]:
    """Any error inside is the checkpoint's: one line naming ``section``."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # what torch's and Lightning's own loaders raise, RecursionError included
        raise UserError(
            f"refusing {path}: its {section} does not fit this run ({type(e).__name__}: {first_line(e)}); "
            "it cannot resume this run."
        ) from None


def try_optimization(path: str | Path, checkpoint: dict[str, Any], build: Callable, parameters: Iterable) -> None:
    """Load the saved optimizer and schedule states into fresh ones (``build(params)``) over copies of ``parameters``
    and take one step: every check their constructors, loaders and steps make, without touching this run's own."""
    saved_optimizers, saved_schedules = checkpoint.get("optimizer_states", []), checkpoint.get("lr_schedulers", [])
    optimizer, scheduler = build([p.detach().clone().requires_grad_(p.requires_grad) for p in parameters])
    with guard(path, "optimizer state"):
        if len(saved_optimizers) != 1:
            raise ValueError(f"{len(saved_optimizers)} optimizers' states, not 1")
        optimizer.load_state_dict(copy.deepcopy(saved_optimizers[0]))  # the step below writes into its tensors
        accepted = inspect.signature(type(optimizer)).parameters
        for group in optimizer.param_groups:  # the saved settings, through the constructor's own checks
            type(optimizer)(group["params"], **{k: v for k, v in group.items() if k in accepted and k != "params"})
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        optimizer.step()
        if not all(torch.isfinite(p).all() for group in optimizer.param_groups for p in group["params"]):
            raise ValueError("one step with it makes the weights NaN or inf")
    if scheduler is None:
        return
    with guard(path, "schedule state"):
        if len(saved_schedules) != 1:
            raise ValueError(f"{len(saved_schedules)} schedules' states, not 1")
        saved = copy.deepcopy(saved_schedules[0])
        if (difference := layout_difference(saved, scheduler.state_dict(), "lr_schedulers[0]")) is not None:
            raise ValueError(difference)
        scheduler.load_state_dict(saved)
        scheduler.step()


def layout_difference(found: Any, expected: Any, where: str) -> str | None:
    """Where a saved state differs in layout from what this run would save: a missing key, a sequence of another
    length, a value of another kind. Extra keys are allowed, and anything the fresh state holds as None (unset)."""
    if expected is None:
        return None
    if isinstance(expected, dict):
        if not isinstance(found, dict):
            return f"{where} is not a mapping"
        for key, value in expected.items():
            if key not in found:
                return f"{where}.{key} is missing"
            if difference := layout_difference(found[key], value, f"{where}.{key}"):
                return difference
        return None
    if isinstance(expected, list | tuple):
        if not isinstance(found, list | tuple) or len(found) != len(expected):
            return f"{where} is not a sequence of {len(expected)}"
        for i, (f, e) in enumerate(zip(found, expected)):
            if difference := layout_difference(f, e, f"{where}[{i}]"):
                return difference
        return None
    kinds = (bool, torch.Tensor, int | float, str)
    kind = next((k for k in kinds if isinstance(expected, k)), type(expected))
    if not isinstance(found, kind) or (kind is not bool and isinstance(found, bool)):
        return f"{where} = {shown(found)} is not like {shown(expected)}"
    if isinstance(expected, torch.Tensor) and isinstance(found, torch.Tensor) and found.shape != expected.shape:
        return f"{where} has shape {tuple(found.shape)}, not {tuple(expected.shape)}"
    return None
