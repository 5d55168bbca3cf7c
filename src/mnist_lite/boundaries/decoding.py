"""Decoding pictures from strangers where the kernel bounds what each one may cost.

A decoder's cost is not a function of its file's size that a list of checks could follow: a JPEG of empty
markers, a TIFF of a strip per row, a PNG of millions of text chunks each cost seconds and gigabytes from a few
megabytes. So PIL runs in a worker process, started once per process that decodes and reused for every picture,
under RLIMIT_AS (its address space) and RLIMIT_CPU (re-armed for each picture), and its parent waits for each
answer at most WALL_FACTOR times as long. A worker out of memory answers a refusal; one killed or late is
replaced, and its picture refused: ``TooCostly``, one line, whatever kind of bomb it was. The worker imports PIL
and numpy, not torch, and answers raw pixels, never pickles: nothing it sends can run code in its parent.
"""

import io
import math
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # refused from the header (PIL's own check, at this limit), before anything is decoded
WORKING_SIDE = 1024  # larger pictures are reduced as they are decoded (a JPEG by its decoder): big photos stay fast
PICTURE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # the formats people save digits in; PIL's others stay off
SECONDS = 2.0  # CPU time one picture may take in the worker (RLIMIT_CPU, whole seconds: up to 1 s more) ...
SECONDS_ENV = "MNIST_LITE_DECODE_SECONDS"  # ... or this, when set (the tests' tighter bound)
WALL_FACTOR = 1.5  # ... and the parent's wait for its answer, this many times SECONDS
MEMORY = 768 * 2**20  # the worker's whole address space (RLIMIT_AS); about 120 MiB of it is Python, numpy and PIL
BATCH_BYTES = 8 * 2**20  # pictures go to the worker in one round trip up to this many bytes
STARTUP_SECONDS = 60  # for the worker's imports, once per worker
_REPLY = struct.Struct("<cIII")  # kind (u: uint8, f: float32, E: unreadable, C: too costly), height, width, bytes
_FORMATS = ", ".join(PICTURE_FORMATS[:-1]) + f" or {PICTURE_FORMATS[-1]}"


class TooCostly(ValueError):
    """A picture refused for what it would cost: too many pixels, or over the worker's time or memory bound."""


class Decoder:
    """One warm worker process and the pipes to it. ``seconds``, ``memory``, ``wall``: its bounds per picture
    (SECONDS_ENV or SECONDS, MEMORY, and WALL_FACTOR * seconds unless given)."""

    def __init__(self, seconds: float | None = None, memory: int | None = None, wall: float | None = None) -> None:
        self.seconds = float(os.environ.get(SECONDS_ENV, SECONDS)) if seconds is None else seconds
        self.memory = MEMORY if memory is None else memory
        self.wall = self.seconds * WALL_FACTOR if wall is None else wall
        self.over = f"refused: over the time/memory bound ({self.seconds:g} s, {self.memory // 2**20} MiB)"
        self.process: subprocess.Popen[bytes] | None = None
        self.buffer = bytearray()  # read from the worker, not yet taken
        self.lock = threading.Lock()

    def decode(self, pictures: Iterable[bytes | ValueError]) -> Iterator[np.ndarray | ValueError]:
        """For each picture's bytes its greyscale pixels, ``uint8`` or ``float32`` in [0, 1] (H, W), or the
        ``ValueError`` saying why not (a ``ValueError`` in a picture's place is passed on). ``pictures`` is read
        a batch of up to BATCH_BYTES at a time: one round trip each, and few pictures held at once."""
        batch: list[bytes | ValueError] = []
        size = 0
        for picture in pictures:
            batch.append(picture)
            size += len(picture) if isinstance(picture, bytes) else 0
            if size >= BATCH_BYTES:
                yield from self._batch(batch)
                batch, size = [], 0
        yield from self._batch(batch)

    def _batch(self, batch: list[bytes | ValueError]) -> Iterator[np.ndarray | ValueError]:
        with self.lock:  # one caller at a time talks to the worker
            answers = self._answers([p for p in batch if isinstance(p, bytes)])
            for picture in batch:
                yield picture if isinstance(picture, ValueError) else next(answers)
            next(answers, None)  # its end: the worker has nothing more to say

    def _answers(self, pictures: list[bytes]) -> Iterator[np.ndarray | ValueError]:
        """Each picture's answer as the worker gives it (so its parent works on one while it decodes the next); a
        worker that dies or is late is replaced, its picture refused, and the rest sent to the new one."""
        unread = 0
        try:
            while pictures:
                self._send(pictures)
                unread = len(pictures)
                for n in range(len(pictures)):
                    answer = self._receive()
                    if answer is None:
                        self.close()
                        unread, pictures = 0, pictures[n + 1 :]
                        yield TooCostly(self.over)
                        break
                    unread -= 1
                    yield answer
                else:
                    pictures = []
        finally:
            if unread:  # left before every answer was read: they would be taken for the next pictures'
                self.close()

    def _send(self, pictures: list[bytes]) -> None:
        message = b"".join([struct.pack("<I", len(pictures))] + [struct.pack("<Q", len(p)) + p for p in pictures])
        for attempt in (0, 1):
            process = self._worker()
            assert process.stdin is not None
            try:
                _write_all(process.stdin.fileno(), message)
                return
            except OSError:  # a worker that died since its last answer (killed from outside): once more, afresh
                self.close()
                if attempt:
                    raise

    def _receive(self) -> np.ndarray | ValueError | None:
        """The worker's next answer, or None when it ended or was late."""
        header = self._read(_REPLY.size, self.wall)
        if header is None:
            return None
        kind, height, width, size = _REPLY.unpack(header)
        payload = self._read(size, self.wall) if size <= 4 * WORKING_SIDE**2 else None
        if payload is None:
            return None
        if kind in (b"E", b"C"):
            message = " ".join(payload.decode("utf-8", "replace").split())[:500] or self.over
            return (TooCostly if kind == b"C" else ValueError)(message)
        if kind in (b"u", b"f") and height * width * (1 if kind == b"u" else 4) == size:
            return np.frombuffer(payload, np.uint8 if kind == b"u" else np.float32).reshape(height, width)
        return None  # not what a worker sends: as if it had died

    def _worker(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            source = str(Path(__file__).resolve().parents[2])  # this mnist_lite, even when it is not installed
            paths = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYTHONPATH": paths, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
            code = "import sys; from mnist_lite.boundaries import decoding\n"
            code += "decoding.work(float(sys.argv[1]), int(sys.argv[2]))"
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, str(self.seconds), str(self.memory)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                env=env,
            )
            if self._read(1, STARTUP_SECONDS) != b"R":
                self.close()
                raise RuntimeError("the image decoding worker did not start")
        return self.process

    def _read(self, size: int, seconds: float) -> bytes | None:
        """``size`` bytes from the worker, or None when it ends or takes more than ``seconds``."""
        assert self.process is not None and self.process.stdout is not None
        fd, deadline = self.process.stdout.fileno(), time.monotonic() + seconds
        while len(self.buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, max(size - len(self.buffer), 2**16))  # often several answers at once
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def close(self) -> None:
        """Stop the worker (the next picture starts another)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self.process, self.buffer = None, bytearray()


_decoder: tuple[int, Decoder] | None = None


def decode(pictures: Iterable[bytes | ValueError]) -> Iterator[np.ndarray | ValueError]:
    """``Decoder.decode`` with this process's own worker (a forked process, a DataLoader's, starts its own)."""
    global _decoder
    if _decoder is None or _decoder[0] != os.getpid():
        _decoder = (os.getpid(), Decoder())
    return _decoder[1].decode(pictures)


def reset() -> None:
    """Stop this process's worker; the next ``decode`` starts one with the module's bounds as they are then."""
    global _decoder
    if _decoder is not None and _decoder[0] == os.getpid():
        _decoder[1].close()
    _decoder = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---- the worker's side ----


def work(seconds: float, memory: int) -> None:
    """A worker's loop: batches of pictures from stdin, an answer for each on stdout, until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for its parent, which stops it
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump a core
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)[1]
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # PIL refuses over twice this, and only warns from it
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL.TiffImagePlugin")  # broken tags it skips
    out = os.dup(1)
    os.dup2(2, 1)  # nothing else printed can mix with the answers
    _write_all(out, b"R")
    stdin = os.fdopen(0, "rb", buffering=2**20)
    while header := stdin.read(4):
        count = struct.unpack("<I", _read_exactly(stdin, 4, header))[0]
        pictures = [_read_exactly(stdin, struct.unpack("<Q", _read_exactly(stdin, 8))[0]) for _ in range(count)]
        for data in pictures:
            used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
            limit = math.ceil(used + seconds)  # SIGXCPU, which ends the worker, once it has used this much
            resource.setrlimit(resource.RLIMIT_CPU, (limit if hard_cpu < 0 else min(limit, hard_cpu), hard_cpu))
            kind, shape, payload = b"E", (0, 0), b""
            try:
                pixels = pixels_of(data)
                kind, shape, payload = (b"u" if pixels.dtype == np.uint8 else b"f"), pixels.shape, pixels.tobytes()
            except TooCostly as e:
                kind, payload = b"C", str(e).encode()
            except MemoryError:
                kind = b"C"  # the parent says which bound
            except ValueError as e:
                payload = str(e).encode()
            _write_all(out, _REPLY.pack(kind, *shape, len(payload)) + payload)


def _read_exactly(stdin: BinaryIO, size: int, start: bytes = b"") -> bytes:
    data = start + stdin.read(size - len(start))
    if len(data) < size:
        sys.exit(0)  # the parent is gone, or closed us
    return data


def pixels_of(data: bytes) -> np.ndarray:
    """A PNG, JPEG, BMP or TIFF file's bytes as greyscale pixels (H, W): ``uint8``, or ``float32`` in [0, 1]. Over
    MAX_PIXELS is ``TooCostly``; anything unreadable a ``ValueError`` saying why. Unbounded: run in a worker."""
    try:
        with Image.open(io.BytesIO(data), formats=PICTURE_FORMATS) as img:
            if img.format == "JPEG":
                img.draft("L", (WORKING_SIDE, WORKING_SIDE))  # the decoder scales down by up to 8 as it goes
            factor = -(-max(img.size) // WORKING_SIDE)
            return _grey(img.reduce(factor) if factor > 1 else img)
    except Image.DecompressionBombError as e:
        raise TooCostly(str(e)) from None
    except UnidentifiedImageError:
        raise ValueError(f"unreadable: not a {_FORMATS} image") from None
    except (ValueError, MemoryError):
        raise
    except Exception as e:  # PIL's parsers raise OSError, SyntaxError, TypeError, struct.error, ... on bad files
        raise ValueError(f"unreadable: {e or type(e).__name__}".strip()) from None


def _grey(img: Image.Image) -> np.ndarray:
    """Greyscale; transparent pixels take the colour that contrasts with the ink."""
    if img.mode.startswith("I;16"):  # 16-bit greyscale: convert("L") would clip it to white
        img = img.convert("I")
    if img.mode in ("I", "F"):
        array = np.asarray(img, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError("pixels that are not finite (NaN or inf)")
        peak = 65535.0 if array.max() > 255 else 255.0 if array.max() > 1 else 1.0
        return np.clip(array / np.float32(peak), 0, 1)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        if np.asarray(img.getchannel("A")).min() < 255:  # some transparency (a canvas's PNG has none)
            rgba = np.asarray(img, dtype=np.float32) / np.float32(255)
            grey, alpha = rgba[..., :3].mean(-1), rgba[..., 3]
            ink_is_dark = (grey * alpha).sum() / max(alpha.sum(), 1e-6) < 0.5
            background = np.float32(1.0 if ink_is_dark else 0.0)
            return grey * alpha + background * (1 - alpha)
    return np.asarray(img.convert("L"))
