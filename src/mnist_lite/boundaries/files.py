"""How this project opens files: regular files only (``fstat`` on the descriptor, opened non-blocking), never
blocking, and no output written through a link; names from data are shown through ``printable``."""

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Literal

from mnist_lite.errors import UserError, printable

_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


def _open(path: str | Path, flags: int, mode: Literal["rb", "wb"]) -> BinaryIO:
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        st_mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(st_mode):
            raise OSError(f"{path} is {_KINDS.get(stat.S_IFMT(st_mode), 'a device')}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def open_for_reading(path: str | Path) -> BinaryIO:
    """A regular file opened for reading; ``OSError`` for anything else, without ever blocking."""
    return _open(path, os.O_RDONLY, "rb")


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The whole of a regular file, or ``ValueError`` when it holds more than ``limit`` bytes."""
    with open_for_reading(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise ValueError(f"{path} is {size:,} bytes, more than the {limit:,} accepted")
        return f.read(limit + 1)[:limit]


def open_for_writing(path: str | Path) -> BinaryIO:
    """A new or emptied regular file to write as it goes: never through a link, never a FIFO or a device."""
    file = _open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, "wb")
    file.truncate(0)  # only once it is known to be a regular file
    return file


def check_output(given: str | Path, option: str, overwrite: bool = True, inputs: tuple[str | Path, ...] = ()) -> None:
    """Refuse, before any work, an output that cannot take a new file; an existing one unless ``overwrite``; and a
    checkpoint or what the command reads (``inputs``, files inside them), which writing would destroy."""
    path = Path(given)
    try:
        if str(given).endswith(os.sep):  # Path() drops the slash: the file would be the folder's name
            problem = "it names a folder. Give a file name"
        elif len(path.name.encode()) > 255:  # NAME_MAX of every common filesystem
            problem = "its name is longer than 255 bytes"
        elif path.suffix == ".ckpt" or _reads(path, {Path(i).resolve() for i in inputs}):
            problem = "it names a checkpoint or an input. Write to a file of its own"
        elif not path.parent.is_dir():
            problem = f"folder {printable(path.parent)} does not exist"
        elif path.is_symlink() or (path.exists() and not path.is_file()):
            problem = "it is a link, a folder, a FIFO or a device. Choose a new file name"
        elif path.exists() and not overwrite:
            problem = "it exists. Choose a new name, or add --overwrite to replace it"
        else:
            return
    except OSError as e:  # a path too long, a folder that cannot be read, ...
        problem = e.strerror or str(e)
    raise UserError(f"{option} {printable(path)}: {problem}.")


def _reads(path: Path, inputs: set[Path]) -> bool:
    """Whether ``path`` is one of ``inputs``, or a file that exists inside one of them."""
    return path.resolve() in inputs or (path.exists() and bool(inputs & set(path.resolve().parents)))


def write_atomically(data: bytes | memoryview, path: str | Path) -> None:
    """Write under a fresh name beside ``path``, fsync, rename: a crash or a full disk never leaves a half-written
    file, concurrent writers never share a temporary file, and a link at ``path`` is replaced, not followed.
    (Lightning's own save renames from the system temp folder, which is only atomic on the same filesystem.)"""
    path = Path(path)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(partial, 0o644)  # mkstemp's file is private; a checkpoint or an export is not
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(21, "Is a directory", str(path))
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
