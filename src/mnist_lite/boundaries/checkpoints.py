"""Checkpoints are data: the one reader of a ``.ckpt`` and its model (no Lightning), checked in layers, each before the
next costs anything: zip layout; entries re-packed for ``torch.load(weights_only=True)``; tensors, fields; network."""

import io
import pickle
import re
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mnist_lite.boundaries import files
from mnist_lite.boundaries import run_folders as runs
from mnist_lite.boundaries.console import shown
from mnist_lite.boundaries.network_spec import build_network, check_network, network_spec
from mnist_lite.errors import UserError, first_line
from mnist_lite.network import Classifier

MAX_FILE_BYTES = 64 * 1024 * 1024  # the project's checkpoints are 0.2-1 MB
MAX_ENTRIES = 4096
MAX_DIRECTORY_BYTES = MAX_ENTRIES * 256  # the archive's directory, parsed whole before its entries are counted
# torch's weights-only reader builds about 200 bytes of objects per byte of pickle; ours are about 9 kB.
MAX_PICKLE_BYTES = 256 * 1024
MAX_TENSOR_ELEMENTS = 16 * 1024 * 1024
MAX_COUNT = 2**53  # Lightning's counters (loops, epoch, global_step): it adds to them as 64-bit integers
MAX_INTEGER = 2**64  # any other integer, such as a data loader's 64-bit seed
COUNTERS = ("loops", "epoch", "global_step")
MAX_VALUES = 200_000  # containers and values walked in one checkpoint, aliases counted each time
DTYPES = {torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.bool}
DTYPES |= {torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8}
# The fields Lightning reads back, and their types.
FIELDS = {"epoch": int, "global_step": int, "pytorch-lightning_version": str, "hyper_parameters": dict, "loops": dict}
FIELDS |= {"callbacks": dict, "optimizer_states": list, "lr_schedulers": list, "torch_rng_state": torch.Tensor}
_VERSION = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}([.+\-\w]{0,40})$")

# zipfile's errors for a damaged archive, or one it cannot read: a newer format (NotImplementedError), encryption.
_ZIP_ERRORS = (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError, EOFError, struct.error)
_LOCAL_HEADER, _DESCRIPTOR, _END_RECORD = b"PK\x03\x04", b"PK\x07\x08", b"PK\x05\x06"


def read(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, its archive, fields and tensors checked. ``UserError`` says why one is refused."""
    path = Path(path)
    checked = _repacked(_read_file(path), path)
    try:
        with _torch_allow_list_only():
            checkpoint = torch.load(checked, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises loading the file unsafely: not repeated here
        raise UserError(
            f"refusing {path}: it holds more than tensors and their containers (torch's weights-only reader)."
        ) from None
    except Exception as e:  # RuntimeError and others, for an archive torch cannot make tensors of
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}: {first_line(e)}).") from None
    _check_fields(checkpoint, path)
    return checkpoint


def _read_file(path: Path) -> bytes:
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*.ckpt"))
        listing = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        held = f"It holds: {listing}." if found else "It holds no .ckpt."
        raise UserError(f"checkpoint {path} is a folder: pass one .ckpt file. {held}")
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


def _repacked(data: bytes, path: Path) -> io.BytesIO:
    """The archive's entries, checked, written afresh into an archive that only they are in."""
    end = data[-22:]
    try:
        if end[:4] != _END_RECORD:  # torch.save writes nothing after it; zipfile would search back, parsing on
            raise zipfile.BadZipFile
        if int.from_bytes(end[12:16], "little") > MAX_DIRECTORY_BYTES:
            raise UserError(f"refusing {path}: its archive's directory is larger than {MAX_ENTRIES:,} entries take.")
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise UserError(
                f"refusing {path}: {len(entries):,} archive entries, more than the {MAX_ENTRIES:,} accepted."
            )
        if any(e.filename.endswith("/data.pkl") and e.file_size > MAX_PICKLE_BYTES for e in entries):
            raise UserError(f"refusing {path}: its pickle is over {MAX_PICKLE_BYTES // 1024} KiB; ours are about 9 kB.")
        if any("/code/" in e.filename or e.filename.endswith("/constants.pkl") for e in entries):
            raise UserError(f"{path} is a TorchScript export, not a checkpoint: pass the .ckpt it was exported from.")
        if problem := _layout_problem(data, entries):
            raise UserError(f"refusing {path}: {problem}.")
        repacked = io.BytesIO()
        with zipfile.ZipFile(repacked, "w", zipfile.ZIP_STORED) as fresh:
            for entry in entries:
                fresh.writestr(entry.filename, archive.read(entry))  # each stored entry's CRC is checked here
    except _ZIP_ERRORS:
        raise UserError(
            f"{path} is not a checkpoint: not a PyTorch zip archive (another kind of file, or cut short). "
            "Pass a .ckpt that fit wrote (mnist-lite runs lists them)."
        ) from None
    repacked.seek(0)
    return repacked


def _layout_problem(data: bytes, entries: list[zipfile.ZipInfo]) -> str | None:
    """What differs from torch.save's layout: entries uncompressed, each name once, back to back, then the directory."""
    if len({e.filename for e in entries}) != len(entries):
        return "its archive holds a name twice, which zip readers resolve differently"
    position = 0
    for entry in sorted(entries, key=lambda e: e.header_offset):
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size != entry.compress_size:
            return f"entry {shown(entry.filename)} is compressed; torch.save stores them"
        if entry.header_offset != position or data[position : position + 4] != _LOCAL_HEADER:
            return "its archive has bytes before, between or across its entries, which zip readers resolve differently"
        name_length, extra_length = struct.unpack_from("<HH", data, position + 26)
        position += 30 + name_length + extra_length + entry.compress_size
        if entry.flag_bits & 0x08:  # a data descriptor follows (torch.save to a file writes them), 16 bytes
            if data[position : position + 4] != _DESCRIPTOR:
                return f"entry {shown(entry.filename)} lacks the data descriptor its flags announce"
            position += 16
    end = data[-22:]
    if end[:4] != _END_RECORD or int.from_bytes(end[16:20], "little") != position:
        return "its archive's directory is not right after its entries, where zip readers would agree on it"
    return None


@contextmanager
def _torch_allow_list_only() -> Iterator[None]:
    """torch.load's weights-only reader with torch's own allow-list alone: Lightning and others add classes no
    checkpoint of ours holds (DTensor's DeviceMesh, whose unpickling can open a listener, among them)."""
    others = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.add_safe_globals(others)


def _check_fields(checkpoint: Any, path: Path) -> None:
    """The fields Lightning reads back have the types it expects; every tensor is a plain, contiguous, bounded one."""
    if not isinstance(checkpoint, dict) or not all(isinstance(k, str) for k in checkpoint):
        raise UserError(f"{path} is not a Lightning checkpoint: it is not a mapping of named fields.")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise UserError(
            f"{path} is a network's weights alone (an export), not a checkpoint: pass the .ckpt of its run."
        )
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise UserError(f"{path} is not a Lightning checkpoint: it has no 'state_dict' of tensors.")
    for key, kind in FIELDS.items():
        if key in checkpoint and (not isinstance(checkpoint[key], kind) or isinstance(checkpoint[key], bool)):
            raise UserError(f"refusing {path}: field {key} = {shown(checkpoint[key])} is not a {kind.__name__}.")
    for key in ("epoch", "global_step"):
        if checkpoint.get(key, 0) < 0:
            raise UserError(f"refusing {path}: field {key} = {checkpoint[key]} is negative.")
    version = checkpoint.get("pytorch-lightning_version", "")
    if not _VERSION.match(version) or int(version.split(".")[0]) < 2:  # Lightning migrates older layouts blindly
        raise UserError(
            f"refusing {path}: field pytorch-lightning_version = {shown(version)} is not a version of Lightning 2."
        )
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in checkpoint.get("callbacks", {}).items()):
        raise UserError(f"refusing {path}: field callbacks is not a mapping of names to states.")
    for key in ("optimizer_states", "lr_schedulers"):
        if not all(isinstance(item, dict) for item in checkpoint.get(key, [])):
            raise UserError(f"refusing {path}: field {key} is not a list of mappings.")
    rng = checkpoint.get("torch_rng_state")
    if rng is not None and (rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape):
        raise UserError(f"refusing {path}: field torch_rng_state is not a random generator's state.")
    for where, tensor in _tensors(checkpoint, path):
        _check_tensor(where, tensor, path)


def _tensors(value: Any, path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor and where it is, of at most MAX_VALUES values; integers bounded (Lightning adds to its counters)."""
    stack: list[tuple[str, Any]] = [("", value)]
    walked = 0
    while stack:
        where, item = stack.pop()
        walked += 1
        if walked > MAX_VALUES:
            raise UserError(f"refusing {path}: it holds more than {MAX_VALUES:,} values.")
        if isinstance(item, torch.Tensor):
            yield where, item
        elif isinstance(item, int) and abs(item) >= (MAX_COUNT if where.split(".")[0] in COUNTERS else MAX_INTEGER):
            raise UserError(f"refusing {path}: {where[:200]} = {shown(item)} is larger than any count or setting.")
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


def load_model(path: str | Path, checkpoint: dict[str, Any] | None = None) -> Classifier:
    """The fitted model of a checkpoint (``checkpoint``, if read already), checked, in eval mode, without Lightning."""
    checkpoint = read(path) if checkpoint is None else checkpoint
    spec = network_spec(checkpoint, path)
    check_network(spec, checkpoint, path)
    # Building draws initial weights, replaced next: a seeded fit from a checkpoint (StartFrom) draws as without one.
    with torch.random.fork_rng(devices=[]):
        model = Classifier(build_network(spec))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_given(ckpt_path: str, root: Path = runs.LOG_ROOT) -> tuple[Path, Classifier]:
    """A ``--ckpt_path`` (a file, or ``last``/``best`` among the runs under ``root``) and its model; says which."""
    path = runs.resolve_checkpoint(ckpt_path, root)
    checkpoint = read(path)
    announce(path, checkpoint)
    return path, load_model(path, checkpoint)


def announce(path: Path, checkpoint: dict[str, Any]) -> None:
    """The console line that says which checkpoint a command uses: its run, and its val_acc when it was saved."""
    saved = [
        state.get("current_score")
        for key, state in checkpoint.get("callbacks", {}).items()
        if key.startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor") == "val_acc"
    ]
    scores = [float(s) for s in saved if isinstance(s, torch.Tensor) and s.numel() == 1]
    score = runs.score(path)  # 0.0 is a score
    if score is None and scores:
        score = scores[0]
    run = runs.run_of(path)
    parts = [f"run {run}"] if run else []
    if score is not None:
        parts.append(f"val_acc {score:.4f}")
    said = f"Checkpoint: {path}" + (f" ({', '.join(parts)})" if parts else "")
    print(files.printable(said), flush=True)  # the run's folder name is data
