"""Checkpoints are data: the strict reader, the hyperparameter allow-list and the network's shape checks.

Plain PyTorch, no Lightning, so export and serve read checkpoints without it. A file is checked in layers, each
before the next costs anything:
1. it is a regular file of bounded size, a zip archive of uncompressed entries of bounded count and size;
2. its pickle names no global outside ``GLOBALS`` (walked with ``pickletools``, before ``torch.load`` runs), whatever
   torch's own weights-only allow-list holds after other libraries have added to it;
3. ``torch.load(weights_only=True)``, then every tensor's metadata (dtype, layout, contiguity, size) and the
   fields Lightning reads back, before any tensor's values are touched;
4. the hyperparameters: a class is accepted only from the allow-list or when the user's own config names it;
5. the weights' shapes against the network the hyperparameters describe, built on the meta device; then the
   values: finite, and variances that are not negative.
Every refusal is one line, its quoted values cut short with ``reprlib``.
"""

import importlib
import inspect
import io
import math
import pickletools
import re
import reprlib
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mnist_lite import files, runs
from mnist_lite.errors import UserError
from mnist_lite.network import NETWORKS, Classifier

MAX_FILE_BYTES = 64 * 1024 * 1024  # the project's checkpoints are 0.2-1 MB
MAX_ENTRIES = 4096
MAX_TENSOR_ELEMENTS = 16 * 1024 * 1024
MAX_VALUES = 200_000  # containers and values walked in one checkpoint, aliases counted each time
# Everything a checkpoint that torch.save and Lightning write can name: the tensor rebuild, the typed storages of
# plain real dtypes, and OrderedDict (state_dict). Complex, quantized, sparse, meta and float8 tensors need others.
GLOBALS = {
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    *(
        f"torch.{kind}Storage"
        for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
    ),
}
DTYPES = {
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
}
# Optimizers and schedules are matched by attribute of modules torch has already imported: checking imports nothing.
OPTIMIZER_MODULE, SCHEDULER_MODULE = "torch.optim", "torch.optim.lr_scheduler"
# Lightning's own keys, written by LightningCLI's save_hyperparameters: one accepted value each.
LIGHTNING_KEYS = {
    "_instantiator": "lightning.pytorch.cli.instantiate_module",
    "_class_path": "mnist_lite.classifier.MNISTClassifier",
}
MODEL_SETTINGS = {"net", "optimizer", "scheduler", "label_smoothing", "teacher", "temperature", "distillation"}
# A dotted name is how jsonargparse names code to import; no plain setting of ours is spelt like one.
_IMPORT_PATH = re.compile(r"^\s*[A-Za-z_]\w*(\s*\.\s*[A-Za-z_]\w*)+\s*$")
_VERSION = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}([.+\-\w]{0,40})$")
_MAX_STRING, _MAX_LIST = 1_000, 1_000
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_short = reprlib.Repr()  # a refused value is quoted this short, however large or deep it is
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxdict = _short.maxtuple = 4
_short.maxlevel = 2
shown = _short.repr
# What zipfile raises for a damaged archive, or for one it cannot read: a newer format version (NotImplementedError),
# an encrypted entry (RuntimeError).
_ZIP_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError, EOFError)


def read(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, after the checks of layers 1-3 above. ``UserError`` says why one is refused."""
    path = Path(path)
    data = _read_file(path)
    _check_archive(data, path)
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for what passed the walk yet fails
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}: {_first_line(e)}).") from None
    _check_fields(checkpoint, path)
    return checkpoint


def _read_file(path: Path) -> bytes:
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*.ckpt"))
        listing = f" It holds: {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}." if found else ""
        raise UserError(f"checkpoint {path} is a folder: pass one .ckpt file.{listing or ' It holds no .ckpt.'}")
    try:
        data = files.read_bytes(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise UserError(
            f"checkpoint {path} does not exist: pass the path of a .ckpt written by 'mnist-lite fit'."
        ) from None
    except ValueError as e:
        raise UserError(f"refusing {path}: {e}; a checkpoint of this project is under 1 MB.") from None
    except OSError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.strerror or e}.") from None
    if not data:
        raise UserError(f"checkpoint {path} is empty (0 bytes): it was not written completely.")
    return data


def _check_archive(data: bytes, path: Path) -> None:
    """The zip directory (bounded, uncompressed) and the pickle's globals, before torch.load reads anything."""
    not_an_archive = UserError(
        f"{path} is not a checkpoint: not a PyTorch zip archive (another kind of file, or cut short). "
        f"Pass a .ckpt that fit wrote (mnist-lite runs lists them)."
    )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except _ZIP_ERRORS:
        raise not_an_archive from None
    if len(entries) > MAX_ENTRIES:
        raise UserError(f"refusing {path}: {len(entries):,} archive entries, more than the {MAX_ENTRIES:,} accepted.")
    if any("/code/" in e.filename or e.filename.endswith("/constants.pkl") for e in entries):
        raise UserError(f"{path} is a TorchScript export, not a checkpoint: pass the .ckpt it was exported from.")
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size != entry.compress_size:
            raise UserError(f"refusing {path}: entry {shown(entry.filename)} is compressed; torch.save stores them.")
    pickles = [e for e in entries if e.filename.endswith("/data.pkl") or e.filename == "data.pkl"]
    if len(pickles) != 1:
        raise UserError(f"{path} is not a checkpoint: a PyTorch archive holds one data.pkl, this one {len(pickles)}.")
    try:
        pickle = archive.read(pickles[0])
    except _ZIP_ERRORS:  # a stored entry's bytes are read and CRC-checked
        raise not_an_archive from None
    for name in _globals(pickle, path):
        if name not in GLOBALS:
            raise UserError(f"refusing {path}: it names {shown(name)}, which is not a tensor or a container of them.")


def _globals(pickle: bytes, path: Path) -> Iterator[str]:
    """Every global the pickle would import, as ``module.name``. STACK_GLOBAL takes its two names from the values
    pushed just before it (literally or from the memo); anything else there is refused."""
    pushed: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(pickle):
            name = op.name
            if name == "GLOBAL":
                module, _, attribute = str(arg).partition(" ")
                yield f"{module}.{attribute}"
            elif name == "STACK_GLOBAL":
                if len(pushed) < 2 or not all(isinstance(p, str) for p in pushed[-2:]):
                    raise UserError(f"refusing {path}: its pickle computes the name of what it imports.")
                yield f"{pushed[-2]}.{pushed[-1]}"
            elif name in ("INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID"):
                raise UserError(f"refusing {path}: its pickle uses {name}, which torch.save never writes.")
            if name in _STRING_OPS:
                pushed.append(arg)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(cast(int, arg))] = pushed[-1] if pushed else None
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(cast(int, arg))))
            elif op.stack_after:
                pushed.append(None)
            del pushed[:-2]
    except UserError:
        raise
    except Exception as e:  # pickletools raises ValueError and others for a malformed stream
        raise UserError(f"{path} is not a checkpoint: its pickle is malformed ({_first_line(e)}).") from None


def _check_fields(checkpoint: Any, path: Path) -> None:
    """The fields Lightning reads back have the types it expects; every tensor is a plain, contiguous, bounded one."""
    if not isinstance(checkpoint, dict) or not all(isinstance(k, str) for k in checkpoint):
        raise UserError(f"{path} is not a Lightning checkpoint: it is not a mapping of named fields.")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise UserError(
            f"{path} is a network's weights alone (an export), not a checkpoint: pass the .ckpt of its run."
        )
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and _is_tensor(v) for k, v in state.items()):
        raise UserError(f"{path} is not a Lightning checkpoint: it has no 'state_dict' of tensors.")
    expected = {
        "epoch": int,
        "global_step": int,
        "pytorch-lightning_version": str,
        "hyper_parameters": dict,
        "loops": dict,
        "callbacks": dict,
        "optimizer_states": list,
        "lr_schedulers": list,
        "torch_rng_state": torch.Tensor,
    }
    for key, kind in expected.items():
        if key in checkpoint and (not isinstance(checkpoint[key], kind) or isinstance(checkpoint[key], bool)):
            raise UserError(f"refusing {path}: field {key} = {shown(checkpoint[key])} is not a {kind.__name__}.")
    for key in ("epoch", "global_step"):
        if checkpoint.get(key, 0) < 0:
            raise UserError(f"refusing {path}: field {key} = {checkpoint[key]} is negative.")
    version = checkpoint.get("pytorch-lightning_version", "2.0.0")
    if not _VERSION.match(version):
        raise UserError(f"refusing {path}: field pytorch-lightning_version = {shown(version)} is not a version.")
    for key in ("optimizer_states", "lr_schedulers"):
        if not all(isinstance(item, dict) for item in checkpoint.get(key, [])):
            raise UserError(f"refusing {path}: field {key} is not a list of mappings.")
    rng = checkpoint.get("torch_rng_state")
    if rng is not None and (rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape):
        raise UserError(f"refusing {path}: field torch_rng_state is not a random generator's state.")
    for where, tensor in _tensors(checkpoint, path):
        _check_tensor(where, tensor, path)


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _tensors(value: Any, path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in the checkpoint with where it is, walking at most MAX_VALUES containers and values."""
    stack: list[tuple[str, Any]] = [("", value)]
    walked = 0
    while stack:
        where, item = stack.pop()
        walked += 1
        if walked > MAX_VALUES:
            raise UserError(f"refusing {path}: it holds more than {MAX_VALUES:,} values.")
        if isinstance(item, torch.Tensor):
            yield where, item
        elif isinstance(item, dict):
            keys = ((k if isinstance(k, str) and len(k) <= 80 else shown(k), v) for k, v in item.items())
            stack.extend((f"{where}.{k}" if where else k, v) for k, v in keys)
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))


def _check_tensor(where: str, t: torch.Tensor, path: Path) -> None:
    """Metadata only: nothing here reads a tensor's values."""
    problem = None
    if t.dtype not in DTYPES:
        problem = f"of dtype {t.dtype}"
    elif t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
        problem = f"a {t.layout} tensor on {t.device}"
    elif t.numel() > MAX_TENSOR_ELEMENTS:
        problem = f"of {t.numel():,} elements, more than the {MAX_TENSOR_ELEMENTS:,} accepted"
    elif not t.is_contiguous():
        problem = f"a view of shape {tuple(t.shape)} and strides {t.stride()}, not a plain tensor"
    if problem:
        raise UserError(f"refusing {path}: tensor {where[:200]} is {problem}.")


def allowed_hyperparameters(
    checkpoint: dict[str, Any], path: str | Path, trusted: Iterable[str] = ()
) -> dict[str, Any]:
    """The checkpoint's model hyperparameters, once every class they name is on the allow-list or in ``trusted``
    (the class paths the user's own config names). Lightning's bookkeeping keys are checked and dropped."""
    hparams = checkpoint.get("hyper_parameters") or {}
    trusted = set(trusted)
    cleaned = {}
    for key, value in hparams.items():
        if key in LIGHTNING_KEYS:
            if value != LIGHTNING_KEYS[key]:
                raise _refused(path, key, value, "is not Lightning's own value")
            continue
        if key not in MODEL_SETTINGS:
            raise _refused(path, key, value, f"is not a setting of the model ({', '.join(sorted(MODEL_SETTINGS))})")
        if key in ("net", "optimizer", "scheduler"):
            _check_class_spec(key, value, path, trusted)
        elif key == "teacher":
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_STRING or "\0" in value):
                raise _refused(path, key, value, "is not a file path")
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
        if found is None or not _is_class(found, (schedules.LRScheduler, schedules.ReduceLROnPlateau)):
            return False
        # LambdaLR and its kin take a callable: a checkpoint could only supply one by naming code.
        return not any("lambda" in p or "func" in p for p in inspect.signature(found).parameters)
    return False


def _is_class(found: Any, base: type | tuple[type, ...]) -> bool:
    return inspect.isclass(found) and issubclass(found, base)


def _check_plain(key: str, value: Any, path: str | Path) -> None:
    """Numbers, booleans, None, short strings that name no code, and short flat lists of those."""
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
    return UserError(f"refusing {path}: hyperparameter {key} = {shown(value)} {why}.")


def build_network(spec: dict[str, Any] | None) -> nn.Module:
    """The network a ``{class_path, init_args}`` spec describes (``None``: the default CompactCNN). The class path
    must already be allowed: by ``allowed_hyperparameters`` for a checkpoint's, by the user for their config's."""
    if spec is None:
        spec = {"class_path": next(iter(NETWORKS))}
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**(spec.get("init_args") or {}))


def check_network(spec: dict[str, Any] | None, checkpoint: dict[str, Any], path: str | Path) -> None:
    """The weights against the network the spec describes: its tensors' names and shapes (built on the meta device,
    so ``hidden: 1000000000`` costs nothing), then their values."""
    try:
        with torch.device("meta"):
            net = build_network(spec)
    except Exception as e:  # a bad init_arg fails in the constructor: TypeError, ValueError, ...
        raise UserError(
            f"refusing {path}: its network settings {shown(spec)} cannot build a network ({_first_line(e)})."
        ) from None
    check_weights({f"net.{name}": t for name, t in net.state_dict().items()}, checkpoint, path)


def check_weights(expected: dict[str, torch.Tensor], checkpoint: dict[str, Any], path: str | Path) -> None:
    """The checkpoint's ``state_dict`` has the expected tensors' names, shapes and kinds; then its values are finite
    and its variances not negative (only now are values read: their size is the network's)."""
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
    bad = [name for name, t in found.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise UserError(f"{path} has non-finite weights (NaN or inf in {', '.join(bad[:3])}): its run diverged.")
    negative = [name for name, t in found.items() if name.endswith("running_var") and (t < 0).any()]
    if negative:
        raise UserError(f"refusing {path}: {', '.join(negative[:3])} holds negative variances.")


def layout_difference(found: Any, expected: Any, where: str) -> str | None:
    """Where a saved training state (a loop's progress, a callback's or a schedule's state) differs in layout from
    the state this run would save: a missing key, a sequence of another length, a value of another kind. Extra keys
    are allowed; so is anything where the fresh state holds None (unset until the run saves)."""
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


def load_model(path: str | Path, checkpoint: dict[str, Any] | None = None) -> Classifier:
    """The fitted model of a checkpoint (``checkpoint``, if it was read already), checked as above, in eval mode:
    images in [0, 1] to logits, without Lightning. Built from the allow-listed hyperparameters alone."""
    checkpoint = read(path) if checkpoint is None else checkpoint
    spec = allowed_hyperparameters(checkpoint, path).get("net")
    check_network(spec, checkpoint, path)
    # Building draws initial weights that the checkpoint's replace: a seeded run that reads a teacher must draw
    # its own weights and dropout exactly as without one.
    with torch.random.fork_rng(devices=[]):
        model = Classifier(build_network(spec))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_given(ckpt_path: str) -> tuple[Path, Classifier]:
    """A tool's ``--ckpt_path`` (a file, ``last`` or ``best``) and its model; says which checkpoint it is."""
    path = runs.resolve_checkpoint(ckpt_path)
    checkpoint = read(path)
    print(f"Checkpoint: {path}{describe(path, checkpoint)}", flush=True)
    return path, load_model(path, checkpoint)


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
    parts = [f"run {run}" if run else "", f"val_acc {score:.4f}" if score is not None else ""]
    described = ", ".join(p for p in parts if p)
    return f" ({described})" if described else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return shown(text.splitlines()[0]) if text else type(error).__name__
