"""The network a checkpoint describes: its hyperparameters' allow-list, and its weights checked against the network
before their values are read. Of the hyperparameters only ``net`` is ever used."""

import importlib
import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_lite.boundaries.console import shown
from mnist_lite.errors import UserError, first_line
from mnist_lite.network import NETWORKS

# A dotted name is how jsonargparse names code to import; no plain setting of ours is spelt like one.
_IMPORT_PATH = re.compile(r"^\s*[A-Za-z_]\w*(\s*\.\s*[A-Za-z_]\w*)+\s*$")
_MAX_STRING, _MAX_LIST = 1_000, 1_000
_SPEC_KEYS = {"class_path", "init_args"}


def network_spec(checkpoint: dict[str, Any], path: str | Path, trusted: Iterable[str] = ()) -> dict[str, Any] | None:
    """A checkpoint's ``hyper_parameters.net`` (``None``: the default), its class one of the project's networks or in
    ``trusted`` (the class paths the user's own config names), its arguments plain."""
    spec = (checkpoint.get("hyper_parameters") or {}).get("net")
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str) or set(spec) - _SPEC_KEYS:
        raise _refused(path, "net", spec, "must be {class_path: ..., init_args: {...}}")
    class_path = spec["class_path"]
    if class_path not in NETWORKS and class_path not in set(trusted):
        raise _refused(path, "net.class_path", class_path, "is not one of the project's networks or your config's")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise _refused(path, "net.init_args", init_args, "is not a mapping")
    for name, value in init_args.items():
        _check_plain(f"net.init_args.{name}", value, path)
    return {"class_path": class_path, "init_args": init_args}


def _check_plain(key: str, value: Any, path: str | Path) -> None:
    """Numbers, booleans, None, short strings that name no code, and short flat lists of those."""
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refused(path, key, value, "is not a finite number")
    elif isinstance(value, str):
        if len(value) > _MAX_STRING or _IMPORT_PATH.match(value):
            raise _refused(path, key, value, "looks like an import path; a checkpoint may not name code")
    elif isinstance(value, list | tuple) and len(value) <= _MAX_LIST:
        for item in value:
            if isinstance(item, list | tuple | dict):
                raise _refused(path, key, value, "nests containers; only flat lists of plain values are accepted")
            _check_plain(key, item, path)
    else:
        raise _refused(path, key, value, "is not a plain value (number, string or flat list)")


def _refused(path: str | Path, key: str, value: Any, why: str) -> UserError:
    return UserError(f"refusing {path}: hyperparameter {key} = {shown(value)} {why}.")


def build_network(spec: dict[str, Any] | None) -> nn.Module:
    """The network a ``{class_path, init_args}`` spec describes (``None``: the default), its class already allowed."""
    spec = spec or {"class_path": NETWORKS[0]}
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))


def check_network(spec: dict[str, Any] | None, checkpoint: dict[str, Any], path: str | Path) -> None:
    """The weights against the network the spec describes, built and run on the meta device: ``hidden: 10**9``
    costs nothing, and settings that build a network no image goes through (``channels: [0, 8]``) are refused."""
    try:
        with torch.device("meta"), warnings.catch_warnings(action="ignore"):  # torch's, on zero-sized layers
            net = build_network(spec)
            if (shape := tuple(net(torch.empty(2, 1, 28, 28)).shape)) != (2, 10):
                raise ValueError(f"it gives {shape[1:]} per image, not 10 logits")
    except Exception as e:  # a bad init_arg fails in the constructor or the forward: TypeError, ValueError, ...
        raise UserError(
            f"refusing {path}: its network settings {shown(spec)} cannot build a network ({first_line(e)})."
        ) from None
    check_weights({f"net.{name}": t for name, t in net.state_dict().items()}, checkpoint, path)


def check_weights(expected: dict[str, torch.Tensor], checkpoint: dict[str, Any], path: str | Path) -> None:
    """The ``state_dict`` has the expected tensors' names, shapes and kinds; only then are its values read."""
    found = checkpoint["state_dict"]
    problems = [
        f"{n} {tuple(found[n].shape)} vs {tuple(t.shape)}"
        for n, t in expected.items()
        if n in found and (found[n].shape != t.shape or found[n].is_floating_point() != t.is_floating_point())
    ]
    problems += [f"{n} missing" for n in expected if n not in found]
    problems += [f"{shown(n)} unexpected" for n in found if n not in expected]
    if problems:
        more = f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        raise UserError(
            f"{path} does not match the network it describes (checkpoint vs network): {'; '.join(problems[:4])}{more}."
        )
    held = {n: t.to(expected[n].dtype) for n, t in found.items() if t.is_floating_point()}  # 1e300 is inf in float32
    if bad := [n for n, t in held.items() if not torch.isfinite(t).all()]:
        raise UserError(f"{path} has non-finite weights (NaN or inf in {', '.join(bad[:3])}): its run diverged.")
    if negative := [name for name, t in found.items() if name.endswith("running_var") and (t < 0).any()]:
        raise UserError(f"refusing {path}: {', '.join(negative[:3])} holds negative variances.")
