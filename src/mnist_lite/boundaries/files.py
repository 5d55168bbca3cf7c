"""How this project opens files: regular files only, never blocking, and no output written through a link.

A FIFO, a device or a socket given as a path would block a reader forever or never end; it is refused from
``fstat`` on the descriptor actually opened, so swapping the file after a check changes nothing. Every open is
non-blocking, so opening a FIFO returns at once. Outputs are created beside their destination under a fresh
name (``mkstemp``) and renamed into place, which replaces a link instead of writing where it points. A name read
from data is printed through ``printable``, so it cannot move the cursor or clear the terminal.
"""

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO


class NotARegularFile(OSError):
    """A path that is a folder, a FIFO, a device or a socket where a file was expected."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def check_regular(path: str | Path) -> None:
    """Raise ``NotARegularFile`` unless ``path`` is a regular file (following links); stat never blocks."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"{path} is {_kind(mode)}, not a regular file")


def open_for_reading(path: str | Path) -> BinaryIO:
    """A regular file opened for reading; ``NotARegularFile`` for anything else, without ever blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{path} is {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The whole of a regular file, or ``ValueError`` when it holds more than ``limit`` bytes."""
    with open_for_reading(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise ValueError(f"{path} is {size:,} bytes, more than the {limit:,} accepted")
        return f.read(limit + 1)[:limit]


def open_for_writing(path: str | Path) -> BinaryIO:
    """A new or emptied regular file to write as it goes (a CSV written batch by batch): never through a link,
    never a FIFO or a device."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{path} is {_kind(mode)}, not a regular file")
        os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


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


def printable(name: object) -> str:
    """A name or path from data as the console shows it: each character that is not printable (ESC, a newline, a
    byte that was not UTF-8) as its Python escape, so ``ESC[2J`` in a file name cannot clear the terminal."""
    text = str(name)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
