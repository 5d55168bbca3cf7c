"""Decoding pictures from strangers where the kernel bounds each one's cost: PIL runs in a warm worker process under
RLIMIT_AS and RLIMIT_CPU (re-armed per picture), its parent waiting at most WALL_FACTOR times as long. A worker out
of memory, killed or late refuses its picture (``TooCostly``); it imports PIL and numpy, answers pixels, not pickles."""

import atexit
import functools
import io
import math
import os
import pickle
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

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096  # refused from the header (PIL's own check, at this limit), before anything is decoded
WORKING_SIDE = 1024  # larger pictures are reduced as they are decoded (a JPEG by its decoder): big photos stay fast
PICTURE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # the formats people save digits in; PIL's others stay off
SECONDS = 2.0  # CPU time one picture may take in the worker (RLIMIT_CPU, whole seconds: up to 1 s more) ...
SECONDS_ENV = "MNIST_LITE_DECODE_SECONDS"  # ... or this, when set (the tests' tighter bound)
WALL_FACTOR = 1.5  # ... and the parent's wait for its answer, this many times SECONDS
MEMORY = 768 * 2**20  # the worker's whole address space (RLIMIT_AS), Python, numpy and PIL included
BATCH_BYTES = 8 * 2**20  # pictures go to the worker in one round trip up to this many bytes
STARTUP_SECONDS = 60  # for the worker's imports, once per worker
_REPLY = struct.Struct("<cIII")  # kind (u: uint8, f: float32, E: unreadable, C: too costly), height, width, bytes


class TooCostly(ValueError):
    """A picture refused for what it would cost: too many pixels, or over the worker's time or memory bound."""


class Decoder:
    """One warm worker process and the pipes to it; ``seconds``, ``memory``, ``wall``: its bounds per picture."""

    def __init__(self, seconds: float | None = None, memory: int | None = None, wall: float | None = None) -> None:
        self.seconds = float(os.environ.get(SECONDS_ENV, SECONDS)) if seconds is None else seconds
        self.memory = MEMORY if memory is None else memory
        self.wall = self.seconds * WALL_FACTOR if wall is None else wall
        self.over = f"refused: over the time/memory bound ({self.seconds:g} s, {self.memory // 2**20} MiB)"
        self.process: subprocess.Popen[bytes] | None = None
        self.unread = 0  # answers the worker owes
        self.buffer = bytearray()  # read from the worker, not yet taken
        self.lock = threading.Lock()

    def decode(self, pictures: Iterable[bytes | ValueError]) -> Iterator[np.ndarray | ValueError]:
        """Each picture's pixels as ``pixels_of`` gives them, or the ``ValueError`` saying why not (one in a picture's
        place is passed on); read in batches of BATCH_BYTES: one round trip each, few pictures held at once."""
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
        """Each answer as the worker gives it, so its parent works on one while it decodes the next."""
        with self.lock:  # one caller at a time talks to the worker
            if self.unread:  # a caller stopped early: its answers would be taken for these pictures'
                self.close()
            for i, picture in enumerate(batch):
                if isinstance(picture, bytes) and not self.unread:  # the first, or the next after a worker stopped
                    self._send([p for p in batch[i:] if isinstance(p, bytes)])  # the rest, in one round trip
                yield picture if isinstance(picture, ValueError) else self._receive()

    def _send(self, pictures: list[bytes]) -> None:
        message = pickle.dumps(pictures, protocol=5)  # to the worker, which trusts its parent; never the other way
        for retry in (False, True):  # a worker killed from outside since its last answer: once more, afresh
            stdin = self._worker().stdin
            try:
                stdin.write(message)  # type: ignore[union-attr]
                stdin.flush()  # type: ignore[union-attr]
                self.unread = len(pictures)
                return
            except OSError:
                self.close()
                if retry:
                    raise

    def _receive(self) -> np.ndarray | ValueError:
        """The worker's next answer; a worker that ended, was late or sent nonsense is stopped, its picture refused."""
        header = self._read(_REPLY.size, self.wall)
        kind, height, width, size = _REPLY.unpack(header) if header else (b"", 0, 0, 0)
        payload = self._read(size, self.wall) if header and size <= 4 * WORKING_SIDE**2 else None
        if payload is not None and kind in (b"E", b"C"):
            self.unread -= 1
            message = " ".join(payload.decode("utf-8", "replace").split())[:500] or self.over
            return (TooCostly if kind == b"C" else ValueError)(message)
        if payload is not None and kind in (b"u", b"f") and height * width * (1 if kind == b"u" else 4) == size:
            self.unread -= 1
            return np.frombuffer(payload, np.uint8 if kind == b"u" else np.float32).reshape(height, width)
        self.close()
        return TooCostly(self.over)

    def _worker(self) -> subprocess.Popen[bytes]:
        if self.process is None:  # this file as a script (-P: nothing beside it is importable): PIL and numpy only
            command = [sys.executable, "-P", __file__, str(self.seconds), str(self.memory)]
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
            pipe = subprocess.PIPE
            self.process = subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=subprocess.DEVNULL, env=env)
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
            ready = remaining > 0 and select.select([fd], [], [], remaining)[0]
            chunk = os.read(fd, max(size - len(self.buffer), 2**16)) if ready else b""  # often several answers
            if not chunk:  # late, or ended
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def close(self) -> None:
        """Stop the worker (the next picture starts another)."""
        if self.process is not None:
            self.process.kill()
            self.process.communicate()  # closes the pipes and waits for it
            self.process, self.unread, self.buffer = None, 0, bytearray()


@functools.cache
def _decoder(pid: int) -> Decoder:
    decoder = Decoder()
    atexit.register(_close_at_exit, decoder, pid)
    return decoder


def _close_at_exit(decoder: Decoder, pid: int) -> None:
    if os.getpid() == pid:  # a forked child that runs its parent's handlers leaves the parent's worker be
        decoder.close()


def decode(pictures: Iterable[bytes | ValueError]) -> Iterator[np.ndarray | ValueError]:
    """``Decoder.decode`` with this process's own worker (a forked process, a DataLoader's, starts its own)."""
    return _decoder(os.getpid()).decode(pictures)


def reset() -> None:
    """Stop this process's worker; the next ``decode`` starts one with the module's bounds as they are then."""
    _decoder(os.getpid()).close()
    _decoder.cache_clear()


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
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing else printed can mix with the answers
    out.write(b"R")
    out.flush()
    while True:
        try:  # a whole batch before any answer: the parent writes it all before it reads
            pictures = pickle.load(sys.stdin.buffer)
        except EOFError:  # the parent is gone, or closed us
            return
        for data in pictures:
            used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
            limit = math.ceil(used + seconds)  # SIGXCPU, which ends the worker, once it has used this much
            resource.setrlimit(resource.RLIMIT_CPU, (limit if hard_cpu < 0 else min(limit, hard_cpu), hard_cpu))
            try:
                pixels = pixels_of(data)
                kind, shape, payload = (b"u" if pixels.dtype == np.uint8 else b"f"), pixels.shape, pixels.tobytes()
            except (ValueError, MemoryError) as e:  # a MemoryError says nothing: the parent says which bound
                costly = isinstance(e, TooCostly | MemoryError)
                kind, shape, payload = b"C" if costly else b"E", (0, 0), str(e).encode()
            out.write(_REPLY.pack(kind, *shape, len(payload)) + payload)
            out.flush()


def pixels_of(data: bytes) -> np.ndarray:
    """A picture's greyscale pixels (H, W): ``uint8``, or ``float32`` in [0, 1]. Unbounded: run in a worker."""
    try:
        with Image.open(io.BytesIO(data), formats=PICTURE_FORMATS) as img:
            if img.format == "JPEG":
                img.draft("L", (WORKING_SIDE, WORKING_SIDE))  # the decoder scales down by up to 8 as it goes
            factor = -(-max(img.size) // WORKING_SIDE)
            upright = ImageOps.exif_transpose(img.reduce(factor) if factor > 1 else img, in_place=False)
            return _grey(upright)  # a phone stores a photo as its sensor saw it, and the turn in its EXIF
    except Image.DecompressionBombError as e:
        raise TooCostly(str(e)) from None
    except UnidentifiedImageError:
        raise ValueError("unreadable: not a PNG, JPEG, BMP or TIFF image") from None
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


if __name__ == "__main__":
    work(float(sys.argv[1]), int(sys.argv[2]))
