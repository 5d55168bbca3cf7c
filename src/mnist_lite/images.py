"""People's own digit images: finding them, reading them, and making them look like MNIST.

MNIST's digits were made by fitting each one into a 20x20 box, keeping its aspect ratio, and centring that box
by its centre of mass in a 28x28 image, white ink on black. ``to_mnist`` does the same to any image, which a
naive resize does not (on handwriting from outside MNIST: about 90% against 34% for the same model).
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from mnist_lite.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
ARRAY_SUFFIXES = {".npy"}
IDX_SUFFIXES = {".idx", ".idx3", ".ubyte"}

Item = tuple[str, int | None]  # a file, and the image's index inside it for array and IDX files


def find_inputs(path: str | Path) -> list[Path]:
    """The files to predict on: ``path`` itself, or every non-hidden file below the folder, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    raise UserError(f"predict path {path} does not exist: pass an image file or a folder of images.")


def _is_idx(path: Path) -> bool:
    return path.suffix.lower() in IDX_SUFFIXES or path.name.endswith("-ubyte")


def count_images(path: Path) -> int:
    """How many images a file holds, from its header alone (1 for image files and unreadable ones)."""
    try:
        if path.suffix.lower() in ARRAY_SUFFIXES:
            shape = np.load(path, mmap_mode="r").shape
            return shape[0] if len(shape) == 3 and shape[1:] == (28, 28) else 1
        if _is_idx(path):
            header = path.read_bytes()[:8]
            return int.from_bytes(header[4:8], "big") if len(header) == 8 and header[2] == 8 and header[3] == 3 else 1
    except (OSError, ValueError):
        pass  # read_image reports the problem for this file
    return 1


def read_image(path: Path, index: int | None) -> Tensor:
    """One image as floats in [0, 1] of shape (H, W), or a ``ValueError`` saying why it cannot be read."""
    suffix = path.suffix.lower()
    try:
        if suffix in ARRAY_SUFFIXES:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.ndim not in (2, 3) or array.shape[-2:] != (28, 28):
                raise ValueError(f"array of shape {array.shape}, expected (N, 28, 28) or (28, 28)")
            image = torch.from_numpy(np.array(array[index] if array.ndim == 3 else array, dtype=np.float32))
            return image / 255 if image.max() > 1 else image
        if _is_idx(path):
            images = read_sn3_pascalvincent_tensor(str(path), strict=False)
            if images.ndim != 3 or images.dtype != torch.uint8:
                raise ValueError(f"IDX file holds {tuple(images.shape)} {images.dtype}, expected uint8 images (N, H, W)")
            return images[index or 0].float() / 255
        if suffix in IMAGE_SUFFIXES:
            with Image.open(path) as img:
                return _grey(img)
        raise ValueError(f"not a supported file type ({', '.join(sorted(IMAGE_SUFFIXES | ARRAY_SUFFIXES))} or IDX)")
    except (OSError, UnidentifiedImageError, RuntimeError, AssertionError, IndexError, EOFError) as e:
        raise ValueError(f"unreadable: {e}".strip()) from None


def _grey(img: Image.Image) -> Tensor:
    """Greyscale in [0, 1]; transparent pixels take the colour that contrasts with the ink."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = torch.from_numpy(np.asarray(img.convert("RGBA"), dtype=np.float32) / 255)
        grey, alpha = rgba[..., :3].mean(-1), rgba[..., 3]
        if alpha.min() < 1:
            ink_is_dark = (grey * alpha).sum() / alpha.sum().clamp(min=1e-6) < 0.5
            background = 1.0 if ink_is_dark else 0.0
            return grey * alpha + background * (1 - alpha)
        return grey
    return torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255)


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
    ink = ((image - background) / (peak - background)).clamp(0, 1)
    rows, cols = torch.nonzero(ink > 0.2, as_tuple=True)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
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

    A batch is ``(images, sources)``: ``uint8`` (B, 28, 28) and, per image, ``(path, index, error)``; an image
    that cannot be read is a blank one with its error, so the run goes on and the CSV says what went wrong.
    """

    def __init__(self, path: str | Path) -> None:
        self.items: list[Item] = []
        for file in find_inputs(path):
            n = count_images(file)
            indexed = file.suffix.lower() in ARRAY_SUFFIXES or _is_idx(file)
            self.items += [(str(file), i if indexed else None) for i in range(n)]
        if not self.items:
            raise UserError(f"no files to predict on in {path}: the folder is empty.")

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, list[tuple[str, int | None, str]]]:
        images, sources = torch.zeros(len(indices), 28, 28, dtype=torch.uint8), []
        for row, i in enumerate(indices):
            path, index = self.items[i]
            try:
                images[row] = to_mnist(read_image(Path(path), index))
                sources.append((path, index, ""))
            except ValueError as e:
                sources.append((path, index, str(e)))
        return images, sources

    def __getitem__(self, i: int):
        images, sources = self.__getitems__([i])
        return images[0], sources[0]
