"""Your own labelled digits: a folder with one subfolder per digit (``0/`` to ``9/``), as torchvision's
``ImageFolder`` lays them out, each file read by predict's reader and made MNIST-like (``boundaries.images``)."""

from contextlib import suppress
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from mnist_lite.boundaries.files import printable
from mnist_lite.boundaries.images import DigitFiles
from mnist_lite.errors import UserError

MAX_IMAGES = 60_000  # as many as MNIST's training set
DIGITS = [str(d) for d in range(10)]


def read(folder: str | Path) -> tuple[Tensor, Tensor]:
    """Every image below ``folder/<digit>/``: ``uint8`` (N, 28, 28) and their digits, or a ``UserError``."""
    root = Path(folder)
    shown = printable(root)
    if not root.is_dir():
        raise UserError(f"data.own_digits: {shown} is not a folder: give one with a subfolder per digit (0/ to 9/).")
    named = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    others = [name for name in named if name not in DIGITS]
    if others or not named:
        found = f"; it has {printable(', '.join(others[:3]))}" if others else ""
        raise UserError(f"data.own_digits: {shown} needs one subfolder per digit, named 0 to 9{found}.")
    digits: dict[int, DigitFiles] = {}
    for name in named:
        with suppress(UserError):  # an empty subfolder: that digit has no images
            digits[int(name)] = DigitFiles(root / name)
    total = sum(len(files) for files in digits.values())
    if not 0 < total <= MAX_IMAGES:
        raise UserError(
            f"data.own_digits: {shown} holds {total:,} images: give between 1 and {MAX_IMAGES:,} in its digit folders."
        )
    images, labels, unreadable = [], [], []
    for digit, files in digits.items():
        for batch, sources in DataLoader(files, batch_size=512, collate_fn=lambda batch: batch):
            images.append(batch)
            labels.append(torch.full((len(batch),), digit))
            unreadable += [(path, error) for path, _, error in sources if error]
    if unreadable:
        path, error = unreadable[0]
        raise UserError(
            f"data.own_digits: {len(unreadable)} of {total:,} images cannot be used; the first, {printable(path)}: "
            f"{printable(error)}.\nFix or remove them, and run again."
        )
    return torch.cat(images), torch.cat(labels)
