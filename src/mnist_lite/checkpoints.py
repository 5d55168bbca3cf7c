"""Checkpoints are data: read with ``weights_only``, their hyperparameters held to an allow-list, their shapes
checked before any tensor is allocated, and written atomically.

Two mechanisms keep a checkpoint from choosing code:
- jsonargparse's import-path policy (``cli.py`` turns it on) denies values that name ``os``, ``subprocess``,
  ``builtins.exec`` and the like, wherever a value comes from. It cannot tell a checkpoint's value from the user's,
  and it allows every module it does not list, so
- ``allowed_hyperparameters`` here runs first, on the raw hyperparameters of every checkpoint that is read: a class
  is accepted only from the allow-list below or when the user's own config names the same class.
"""

import inspect
import io
import math
import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from mnist_lite.classifier import MNISTClassifier
from mnist_lite.errors import UserError
from mnist_lite.network import CompactCNN

# What a checkpoint may name by itself, per hyperparameter. Optimizers and schedules are matched by attribute of
# modules torch has already imported, so checking one imports nothing.
NETWORKS = {"mnist_lite.network.CompactCNN"}
OPTIMIZER_MODULE, SCHEDULER_MODULE = "torch.optim", "torch.optim.lr_scheduler"
# Lightning's own keys, written by LightningCLI's save_hyperparameters: one accepted value each.
LIGHTNING_KEYS = {
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
    "_class_path": "mnist_lite.classifier.MNISTClassifier",
}
# A dotted name is how jsonargparse names code to import; no plain setting of ours is spelt like one.
_IMPORT_PATH = re.compile(r"^\s*[A-Za-z_]\w*(\s*\.\s*[A-Za-z_]\w*)+\s*$")
_MAX_STRING, _MAX_LIST = 1_000, 1_000


def read(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``, so a file can never run code, and check its weights."""
    path = Path(path)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*.ckpt"))
        hint = (
            f" It holds: {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}." if found else " It holds no .ckpt."
        )
        raise UserError(f"checkpoint {path} is a folder: pass one .ckpt file.{hint}")
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
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise UserError(f"{path} is not a Lightning checkpoint: it has no 'state_dict' of tensors.")
    bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UserError(f"{path} has non-finite weights (NaN or inf in {', '.join(bad[:3])}): its run diverged.")
    return checkpoint


def allowed_hyperparameters(
    checkpoint: dict[str, Any], path: str | Path, trusted: Iterable[str] = ()
) -> dict[str, Any]:
    """The checkpoint's model hyperparameters, once every class they name is on the allow-list or in ``trusted``
    (the class paths the user's own config names). Lightning's bookkeeping keys are checked and dropped."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise _refused(path, "hyper_parameters", hparams, "is not a mapping")
    accepted = set(inspect.signature(MNISTClassifier.__init__).parameters) - {"self"}
    trusted = set(trusted)
    cleaned = {}
    for key, value in hparams.items():
        if key in LIGHTNING_KEYS:
            if value != LIGHTNING_KEYS[key]:
                raise _refused(path, key, value, "is not Lightning's own value")
            continue
        if key not in accepted:
            raise _refused(path, key, value, f"is not a setting of the model ({', '.join(sorted(accepted))})")
        if key in ("net", "optimizer", "scheduler"):
            _check_class_spec(key, value, path, trusted)
        else:
            _check_plain(key, value, path)
        cleaned[key] = value
    return cleaned


def _check_class_spec(key: str, spec: Any, path: str | Path, trusted: set[str]) -> None:
    if spec is None:
        return
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("class_path"), str)
        or set(spec) - {"class_path", "init_args"}
    ):
        raise _refused(path, key, spec, "must be {class_path: ..., init_args: {...}}")
    class_path = spec["class_path"]
    if class_path not in trusted and not _on_allow_list(key, class_path):
        raise _refused(path, f"{key}.class_path", class_path, "is not on the allow-list and not named by your config")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise _refused(path, f"{key}.init_args", init_args, "is not a mapping")
    for name, value in init_args.items():
        _check_plain(f"{key}.init_args.{name}", value, path)


def _on_allow_list(key: str, class_path: str) -> bool:
    if key == "net":
        return class_path in NETWORKS
    module, _, name = class_path.rpartition(".")
    if key == "optimizer" and module == OPTIMIZER_MODULE:
        return _is_class(getattr(torch.optim, name, None), torch.optim.Optimizer)
    if key == "scheduler" and module == SCHEDULER_MODULE:
        schedules = torch.optim.lr_scheduler
        found = getattr(schedules, name, None)
        if not _is_class(found, (schedules.LRScheduler, schedules.ReduceLROnPlateau)):
            return False
        # LambdaLR and its kin take a callable: a checkpoint could only supply one by naming code.
        return not _takes_callable(found)
    return False


def _is_class(found: Any, base: type | tuple[type, ...]) -> bool:
    return inspect.isclass(found) and issubclass(found, base)


def _takes_callable(cls: Any) -> bool:
    return any("lambda" in name or "func" in name for name in inspect.signature(cls).parameters)


def _check_plain(key: str, value: Any, path: str | Path) -> None:
    """Numbers, booleans, None, short strings that name no code, and short lists of those."""
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refused(path, key, value, "is not a finite number")
        return
    if isinstance(value, str):
        if len(value) > _MAX_STRING or _IMPORT_PATH.match(value):
            raise _refused(path, key, value, "looks like an import path; a checkpoint may not name code")
        return
    if isinstance(value, list | tuple) and len(value) <= _MAX_LIST:
        for item in value:
            if isinstance(item, list | tuple | dict):
                raise _refused(path, key, value, "nests containers; only flat lists of plain values are accepted")
            _check_plain(key, item, path)
        return
    raise _refused(path, key, value, "is not a plain value (number, string or flat list)")


def _refused(path: str | Path, key: str, value: Any, why: str) -> UserError:
    shown = repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return UserError(f"refusing {path}: hyperparameter {key} = {shown} {why}.")


def build_network(spec: dict[str, Any] | None) -> nn.Module:
    """The network a ``{class_path, init_args}`` spec describes (``None``: the default CompactCNN). The class path
    must already be allowed: by ``allowed_hyperparameters`` for a checkpoint's, by the user for their config's."""
    if spec is None:
        return CompactCNN()
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return cls(**(spec.get("init_args") or {}))


def check_shapes(spec: dict[str, Any] | None, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Build the described network on the meta device (no memory) and compare its tensors with the checkpoint's,
    so a checkpoint that claims ``hidden: 1000000000`` is refused before anything is allocated."""
    try:
        with torch.device("meta"):
            net = build_network(spec)
    except Exception as e:  # a bad init_arg fails in the constructor: TypeError, ValueError, ...
        raise UserError(
            f"refusing {path}: its network settings {spec} cannot build a network ({_first_line(e)})."
        ) from None
    expected = {f"net.{name}": tuple(t.shape) for name, t in net.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    problems = [f"{n} {found[n]} vs {expected[n]}" for n in expected if n in found and found[n] != expected[n]]
    problems += [f"{n} missing" for n in expected if n not in found]
    problems += [f"{n} unexpected" for n in found if n not in expected]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise UserError(f"{path} does not match the network it describes (checkpoint vs network): {shown}.")


def load_model(path: str | Path) -> MNISTClassifier:
    """The fitted model of a checkpoint, read safely, in eval mode: for export and plain use. It takes images in
    [0, 1]; ``.net`` is the plain network. Built from the allow-listed hyperparameters, never by Lightning's
    ``load_from_checkpoint``, which would hand them to jsonargparse."""
    checkpoint = read(path)
    hparams = allowed_hyperparameters(checkpoint, path)
    check_shapes(hparams.get("net"), checkpoint, path)
    # Building draws initial weights that the checkpoint's replace: a seeded run that reads a teacher must draw
    # its own weights and dropout exactly as without one.
    with torch.random.fork_rng(devices=[]):
        net = build_network(hparams.get("net"))
    model = MNISTClassifier(net=net, label_smoothing=hparams.get("label_smoothing", 0.0))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def write_atomically(data: bytes | memoryview, path: Path) -> None:
    """Write beside the destination, fsync, rename: a crash or a full disk never leaves a half-written file.
    (Lightning's own save renames from the system temp folder, which is only atomic on the same filesystem.)"""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # per process: concurrent writers never meet
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, made safe both ways: writes are atomic, and reads go through ``read`` (weights
    only). The checkpoint the CLI has already read and checked is handed over, so the Trainer's restore reads the
    same bytes that were checked, not the file a second time."""

    def __init__(self) -> None:
        self.preloaded: tuple[Path, dict[str, Any]] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory first, so a full disk shows as the OSError it is
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(buffer.getbuffer(), path)
        except OSError as e:
            raise UserError(
                f"cannot write checkpoint {path}: {e.strerror or e}. Free space or log elsewhere."
            ) from None

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if self.preloaded is not None and Path(path).resolve() == self.preloaded[0].resolve():
            return self.preloaded[1]
        return read(path)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"
