"""People's own digit images: finding them, reading them, and making them look like MNIST.

MNIST's digits were made by fitting each one into a 20x20 box, keeping its aspect ratio, and centring that box
by its centre of mass in a 28x28 image, white ink on black. ``to_mnist`` does the same to any image, which a
naive resize does not (on handwriting from outside MNIST: about 90% against 34% for the same model).
"""

import bisect
import math
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
ARRAY_SUFFIXES = {".npy"}
IDX_SUFFIXES = {".idx", ".idx3", ".ubyte"}
MAX_PICTURE_BYTES = 64 * 1024 * 1024  # what each picture may cost once read is bounded in decoding.py
INK_EDGES = (0.2, 0.8)


def find_inputs(path: str | Path) -> list[Path]:
    """The files to predict on: ``path`` itself, or every non-hidden file below the folder, sorted. The folder is
    walked with a list of folders to visit, not by recursion (a folder nested thousands deep is no error), and
    links to folders are not followed (no loops)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"predict path {path} does not exist: pass an image file or a folder of images.")
    found, folders = [], [path]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in (e for e in entries if not e.name.startswith(".")):
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                    elif entry.is_file():
                        found.append(Path(entry.path))
        except OSError:  # a folder that cannot be listed, as rglob skipped it
            continue
    return sorted(found)


def _is_idx(path: Path) -> bool:
    return path.suffix.lower() in IDX_SUFFIXES or path.name.endswith("-ubyte")


def idx_shape(path: Path) -> tuple[int, int, int]:
    """(N, H, W) of an IDX file of ``uint8`` images, from its header, checked against the file's size.

    Written here rather than taken from torchvision, whose reader loads the whole file for every image asked for
    and believes whatever count the header claims.
    """
    with files.open_for_reading(path) as f:
        header, size = f.read(16), os.fstat(f.fileno()).st_size
    if len(header) < 16 or header[:3] != b"\x00\x00\x08" or header[3] != 3:
        raise ValueError("not an IDX file of uint8 images (N, H, W)")
    n, h, w = (int.from_bytes(header[i : i + 4], "big") for i in (4, 8, 12))
    if not 0 < h * w <= MAX_PIXELS:
        raise ValueError(f"IDX images of {h}x{w} pixels: from 1 to {MAX_PIXELS:,} are accepted")
    if size != 16 + n * h * w:
        raise ValueError(f"IDX header claims {n} images of {h}x{w}, but the file holds {size:,} bytes")
    return n, h, w


def npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """A .npy file's shape, dtype and data offset, from its header, checked against the file's size: numbers in C
    order, (N, 28, 28) or (28, 28). Read here rather than with np.load, which maps a path (not a file already
    opened and checked) and believes the header."""
    with files.open_for_reading(path) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"format version {version} is not read here")
            shape, fortran, dtype = read_header[version](f)
        except (ValueError, SyntaxError, TypeError) as e:
            raise ValueError(f"not a .npy array ({e})") from None
        offset, size = f.tell(), os.fstat(f.fileno()).st_size
    if dtype.kind not in "biuf" or dtype.hasobject or fortran:
        raise ValueError(f"array of dtype {dtype}{' in Fortran order' if fortran else ''}: numbers in C order are read")
    if len(shape) not in (2, 3) or tuple(shape[-2:]) != (28, 28):
        raise ValueError(f"array of shape {tuple(shape)}, expected (N, 28, 28) or (28, 28)")
    if size != offset + math.prod(shape) * dtype.itemsize:
        raise ValueError(f"array header claims shape {tuple(shape)}, but the file holds {size:,} bytes")
    return tuple(shape), dtype, offset


def count_images(path: Path) -> int:
    """How many images a file holds, from its header alone (1 for image files and unreadable ones)."""
    try:
        if path.suffix.lower() in ARRAY_SUFFIXES:
            shape = npy_shape(path)[0]
            return shape[0] if len(shape) == 3 else 1
        if _is_idx(path):
            return idx_shape(path)[0] or 1
    except (OSError, ValueError):
        pass  # read_image reports the problem for this file
    return 1


def read_image(path: Path, index: int | None) -> Tensor:
    """One image as floats in [0, 1] of shape (H, W), or a ``ValueError`` saying why it cannot be read."""
    suffix = path.suffix.lower()
    try:
        if suffix in ARRAY_SUFFIXES:
            _, dtype, offset = npy_shape(path)
            pixels = _read_at(path, offset + (index or 0) * 28 * 28 * dtype.itemsize, 28 * 28 * dtype.itemsize)
            image = torch.from_numpy(np.frombuffer(pixels, dtype=dtype).astype(np.float32).reshape(28, 28))
            if not torch.isfinite(image).all():
                raise ValueError("pixels that are not finite (NaN or inf)")
            return image / 255 if image.max() > 1 else image.clamp(min=0)
        if _is_idx(path):
            _, h, w = idx_shape(path)
            pixels = _read_at(path, 16 + (index or 0) * h * w, h * w)  # one image: seek to it, read its bytes
            return torch.from_numpy(np.frombuffer(pixels, dtype=np.uint8).reshape(h, w).astype(np.float32) / 255)
        if suffix in IMAGE_SUFFIXES:
            return as_tensor(next(decoding.decode([_picture_bytes(path)])))
        raise ValueError(f"not a supported file type ({', '.join(sorted(IMAGE_SUFFIXES | ARRAY_SUFFIXES))} or IDX)")
    except (OSError, RuntimeError, IndexError, EOFError) as e:
        raise ValueError(f"unreadable: {e}".strip()) from None


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with files.open_for_reading(path) as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise ValueError("unreadable: the file ends early")
    return data


def _picture_bytes(path: Path) -> bytes | ValueError:
    try:
        return files.read_bytes(path, MAX_PICTURE_BYTES)
    except OSError as e:
        return ValueError(f"unreadable: {e}".strip())
    except ValueError as e:
        return e


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
    # The box around the ink (over INK_EDGES[0] of the way from background to peak), found before the image is
    # rescaled, so that only the box is: most of a drawing is background.
    low, high = INK_EDGES
    inked = (image > background + low * (peak - background)).numpy()  # numpy's any/nonzero: 0.2 ms less than torch's
    rows, cols = np.flatnonzero(inked.any(1)), np.flatnonzero(inked.any(0))
    box_pixels = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # Ink as MNIST has it: crisp. A scan's or a soft pen's edges, kept grey, would thicken every stroke once the
    # digit is shrunk to 20 px: what is under INK_EDGES[0] of the way from background to peak is background, what
    # is over INK_EDGES[1] full ink (+3.6 points on people's digits for OneEpochCNN; docs/performance.md).
    ink = (((box_pixels - background) / (peak - background) - low) / (high - low)).clamp(0, 1)
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    box = F.interpolate(ink[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    box = box.clamp(0, 1)
    ys, xs = torch.arange(size[0], dtype=torch.float32), torch.arange(size[1], dtype=torch.float32)
    mass = box.sum()
    centre_y, centre_x = (box.sum(1) @ ys) / mass, (box.sum(0) @ xs) / mass
    top = int(min(max(round(14 - centre_y.item()), 0), 28 - size[0]))
    left = int(min(max(round(14 - centre_x.item()), 0), 28 - size[1]))
    canvas = torch.zeros(28, 28)
    canvas[top : top + size[0], left : left + size[1]] = box
    return (canvas * 255).round().to(torch.uint8)


class DigitFiles(Dataset):
    """Every image in a file or folder, read and made MNIST-like batch by batch, so memory does not grow with N.

    Only one entry per file is kept (with its image count from the header), so a file claiming millions of images
    costs nothing until they are read. A batch is ``(images, sources)``: ``uint8`` (B, 28, 28) and, per image,
    ``(path, index, error)``; an image that cannot be read is a blank one with its error, so the run goes on and the
    CSV says what went wrong.
    """

    def __init__(self, path: str | Path) -> None:
        self.files: list[tuple[Path, bool]] = []  # (file, holds several images)
        self.starts: list[int] = []  # the dataset index of each file's first image
        total = 0
        for file in find_inputs(path):
            self.files.append((file, file.suffix.lower() in ARRAY_SUFFIXES or _is_idx(file)))
            self.starts.append(total)
            total += count_images(file)
        self.total = total
        if not self.files:
            raise UserError(f"no files to predict on in {path}: the folder is empty.")

    def __len__(self) -> int:
        return self.total

    def item(self, i: int) -> tuple[Path, int | None]:
        """The file and the index inside it of image ``i``."""
        f = bisect.bisect_right(self.starts, i) - 1
        file, several = self.files[f]
        return file, i - self.starts[f] if several else None

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, list[tuple[str, int | None, str]]]:
        images, items = torch.zeros(len(indices), 28, 28, dtype=torch.uint8), [self.item(i) for i in indices]
        errors = [""] * len(indices)
        pictures = [row for row, (path, _) in enumerate(items) if path.suffix.lower() in IMAGE_SUFFIXES]
        decoded = decoding.decode(_picture_bytes(items[row][0]) for row in pictures)  # in one warm worker
        for pixels, row in zip(decoded, pictures):  # decoded first: it is run to its end
            try:
                images[row] = to_mnist(as_tensor(pixels))
            except ValueError as e:
                errors[row] = str(e)
        for row in sorted(set(range(len(items))) - set(pictures)):
            try:
                images[row] = to_mnist(read_image(*items[row]))
            except ValueError as e:
                errors[row] = str(e)
        return images, [(str(path), index, error) for (path, index), error in zip(items, errors)]

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[str, int | None, str]]:
        images, sources = self.__getitems__([i])
        return images[0], sources[0]
