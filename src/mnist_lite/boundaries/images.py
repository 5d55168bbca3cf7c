"""People's own digit images: finding, reading, and making them look like MNIST, whose digits were each fitted into a
20x20 box (aspect ratio kept) centred by its centre of mass in 28x28, white on black: ``to_mnist`` does the same."""

import bisect
import itertools
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from mnist_lite.boundaries import decoding, files
from mnist_lite.boundaries.decoding import MAX_PIXELS
from mnist_lite.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MAX_PICTURE_BYTES = 64 * 1024 * 1024  # what each picture may cost once read is bounded in decoding.py
INK_EDGES = (0.2, 0.8)
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def find_inputs(path: str | Path) -> list[Path]:
    """``path``, or each non-hidden file below it, sorted; walked without recursion (any depth), never into a link to
    a folder (no loops)."""
    path = Path(path)
    if not path.is_dir():
        if not (path.exists() or path.is_symlink()):
            raise UserError(f"{files.printable(path)} does not exist: pass an image file or a folder of images.")
        return [path]  # a file, or what its row says cannot be read: a FIFO, a device, a link to nothing
    found: list[Path] = []
    folders = [path]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                visible = [entry for entry in entries if not entry.name.startswith(".")]
            folders += [Path(entry.path) for entry in visible if entry.is_dir(follow_symlinks=False)]
            found += [Path(entry.path) for entry in visible if _is_file(entry)]
        except OSError:  # a folder that cannot be listed is skipped
            continue
    return sorted(found)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link to itself: listed, and its row says why it cannot be read
        return True


def is_array(path: Path) -> bool:
    """A .npy array or an IDX file: several images, read one at a time (``header``)."""
    return path.suffix.lower() in (".npy", ".idx", ".idx3", ".ubyte") or path.name.endswith("-ubyte")


def header(path: Path) -> tuple[int, tuple[int, int], np.dtype, int]:
    """An array's image count, image shape, dtype and data offset, from its header, checked against the file's size
    (np.load and torchvision believe the count a header claims)."""
    with files.open_for_reading(path) as f:
        if path.suffix.lower() == ".npy":
            try:
                version = np.lib.format.read_magic(f)
                if version not in _NPY_HEADERS:
                    raise ValueError(f"format version {version} is not read here")
                shape, fortran, dtype = _NPY_HEADERS[version](f)
            except (ValueError, SyntaxError, TypeError) as e:
                raise ValueError(f"not a .npy array ({e})") from None
            if dtype.kind not in "biuf" or dtype.hasobject or fortran:
                order = " in Fortran order" if fortran else ""
                raise ValueError(f"array of dtype {dtype}{order}: numbers in C order are read")
            if len(shape) not in (2, 3) or tuple(shape[-2:]) != (28, 28):
                raise ValueError(f"array of shape {tuple(shape)}, expected (N, 28, 28) or (28, 28)")
            count = shape[0] if len(shape) == 3 else 1
        else:
            magic = f.read(16)
            if len(magic) < 16 or magic[:4] != b"\x00\x00\x08\x03":
                raise ValueError("not an IDX file of uint8 images (N, H, W)")
            count, h, w = (int.from_bytes(magic[i : i + 4], "big") for i in (4, 8, 12))
            shape, dtype = (h, w), np.dtype(np.uint8)
            if not 0 < h * w <= MAX_PIXELS:
                raise ValueError(f"IDX images of {h}x{w} pixels: from 1 to {MAX_PIXELS:,} are accepted")
        offset, size = f.tell(), os.fstat(f.fileno()).st_size
    h, w = shape[-2:]
    if size != offset + count * h * w * dtype.itemsize:
        raise ValueError(f"header claims {count} images of {h}x{w}, but the file holds {size:,} bytes")
    return count, (h, w), dtype, offset


def count_images(path: Path) -> int:
    """How many images a file holds, from its header alone (1 for pictures, empty arrays and unreadable files)."""
    try:
        return (header(path)[0] or 1) if is_array(path) else 1
    except (OSError, ValueError):
        return 1  # read_image reports the problem for this file


def read_image(path: Path, index: int | None) -> Tensor:
    """One image as floats in [0, 1] of shape (H, W), or a ``ValueError`` saying why it cannot be read."""
    try:
        if is_array(path):
            _, (h, w), dtype, offset = header(path)
            size = h * w * dtype.itemsize
            with files.open_for_reading(path) as f:  # one image: its bytes alone
                data = os.pread(f.fileno(), size, offset + (index or 0) * size)
            if len(data) != size:
                raise ValueError("unreadable: the file ends early")
            image = torch.from_numpy(np.frombuffer(data, dtype=dtype).astype(np.float32).reshape(h, w))
            if not torch.isfinite(image).all():
                raise ValueError("pixels that are not finite (NaN or inf)")
            return image / 255 if path.suffix.lower() != ".npy" or image.max() > 1 else image.clamp(min=0)  # IDX: bytes
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return as_tensor(next(decoding.decode([_picture_bytes(path)])))
        raise ValueError(f"not a supported file type ({', '.join(sorted(IMAGE_SUFFIXES | {'.npy'}))} or IDX)")
    except (OSError, RuntimeError, IndexError, EOFError) as e:
        raise ValueError(f"unreadable: {e}".strip()) from None


def _picture_bytes(path: Path) -> bytes | ValueError:
    try:
        return files.read_bytes(path, MAX_PICTURE_BYTES)
    except (OSError, ValueError) as e:
        return e if isinstance(e, ValueError) else ValueError(f"unreadable: {e}".strip())


def as_tensor(pixels: np.ndarray | ValueError) -> Tensor:
    """A picture as ``decoding`` answers it, as floats in [0, 1] (H, W); its ``ValueError`` raised."""
    if isinstance(pixels, ValueError):
        raise pixels
    return torch.from_numpy(pixels.astype(np.float32) / 255 if pixels.dtype == np.uint8 else pixels.copy())


def to_mnist(image: Tensor) -> Tensor:
    """Any greyscale image in [0, 1] (H, W) to a 28x28 ``uint8`` digit, white on black, as MNIST was made."""
    if image.numel() == 0:
        raise ValueError("empty image")
    border = torch.cat([image[0], image[-1], image[:, 0], image[:, -1]])
    if border.median() > 0.5:  # a light background: dark ink on paper
        image, border = 1 - image, 1 - border
    background, peak = border.median(), image.max()
    if peak - background < 0.1:
        raise ValueError("no digit found: the image is blank")
    # The box around the ink, found before anything is rescaled: most of a drawing is background.
    low, high = INK_EDGES
    inked = (image > background + low * (peak - background)).numpy()
    rows, cols = np.flatnonzero(inked.any(1)), np.flatnonzero(inked.any(0))
    box_pixels = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # Crisp ink, as MNIST's: a scan's grey edges would thicken every stroke once the digit is shrunk to 20 px.
    ink = (((box_pixels - background) / (peak - background) - low) / (high - low)).clamp(0, 1)
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    box = F.interpolate(ink[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    box = box.clamp(0, 1)
    # Centred by its centre of mass: the mean row (column) index, weighted by ink.
    centre = [
        (box.sum(1 - axis) @ torch.arange(n, dtype=torch.float32) / box.sum()).item() for axis, n in enumerate(size)
    ]
    top, left = (min(max(round(14 - c), 0), 28 - n) for c, n in zip(centre, size))
    canvas = torch.zeros(28, 28)
    canvas[top : top + size[0], left : left + size[1]] = box
    return (canvas * 255).round().to(torch.uint8)


class DigitFiles(Dataset):
    """Every image in a file or folder, made MNIST-like batch by batch: memory does not grow with N. A batch is
    ``uint8`` images (B, 28, 28) and, per image, ``(path, index, error)``; an unreadable image is blank."""

    def __init__(self, path: str | Path) -> None:
        self.files = find_inputs(path)
        if not self.files:
            raise UserError(f"no files to predict on in {files.printable(path)}: the folder is empty.")
        # The dataset index of each file's first image, and the total last.
        self.starts = list(itertools.accumulate(map(count_images, self.files), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def item(self, i: int) -> tuple[Path, int | None]:
        """The file and the index inside it of image ``i``."""
        f = bisect.bisect_right(self.starts, i) - 1
        return self.files[f], i - self.starts[f] if is_array(self.files[f]) else None

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, list[tuple[str, int | None, str]]]:
        images, items = torch.zeros(len(indices), 28, 28, dtype=torch.uint8), [self.item(i) for i in indices]
        errors = [""] * len(indices)
        pictures = [row for row, (path, _) in enumerate(items) if path.suffix.lower() in IMAGE_SUFFIXES]
        decoded = decoding.decode(_picture_bytes(items[row][0]) for row in pictures)  # in one warm worker
        others = [(None, row) for row, (path, _) in enumerate(items) if path.suffix.lower() not in IMAGE_SUFFIXES]
        for pixels, row in itertools.chain(zip(decoded, pictures), others):  # each answer as the worker gives it
            try:
                images[row] = to_mnist(read_image(*items[row]) if pixels is None else as_tensor(pixels))
            except ValueError as e:
                errors[row] = str(e)
        return images, [(str(path), index, error) for (path, index), error in zip(items, errors)]

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[str, int | None, str]]:
        images, sources = self.__getitems__([i])
        return images[0], sources[0]
