"""The MNIST files: the copy bundled in this package, extracted and checked against the official MD5 sums, then read
into memory as ``uint8`` tensors by torchvision's dataset class."""

import gzip
import hashlib
import logging
import zlib
from importlib.resources import files as package_files
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from mnist_lite.boundaries import files
from mnist_lite.errors import UserError

log = logging.getLogger(__name__)

# The official MD5 sums of the uncompressed MNIST files (the bundled .gz wrappers were re-made).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
BUNDLE_DIR = Path(str(package_files("mnist_lite") / "data" / "mnist"))


def prepare(data_dir: str | Path) -> None:
    """Make ``<data_dir>/MNIST/raw`` hold the four IDX files, each re-extracted from the bundle unless it checks."""
    raw = Path(data_dir) / "MNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {raw}: {e.strerror}. Set data.data_dir to a writable folder.") from None
    for name, md5 in MNIST_MD5.items():
        path = raw / name
        if check_integrity(str(path), md5):
            continue
        if path.is_file():
            log.warning("%s fails its MD5 check (truncated or corrupt): re-extracting it from the bundled copy.", path)
        try:
            data = gzip.decompress((BUNDLE_DIR / f"{name}.gz").read_bytes())
        except (OSError, EOFError, zlib.error):
            data = b""  # refused below, as any damage to the bundle
        if hashlib.md5(data).hexdigest() != md5:
            raise UserError(
                f"the bundled {name}.gz is missing or fails its MD5 check: reinstall mnist-lite, or put the official "
                f"IDX file {name} in {raw}."
            )
        try:  # never a half-written file under the real name, whatever runs extract at the same moment
            files.write_atomically(data, path)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror}. Set data.data_dir to a writable folder.") from None


def load(data_dir: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as ``(images, labels)``: ``uint8`` of shape (N, 28, 28) and ``int64`` of shape (N,)."""
    split = MNIST(str(data_dir), train=train, download=False)
    return split.data, split.targets


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images (N, 28, 28) to floats in [0, 1] of shape (N, 1, 28, 28)."""
    return images.unsqueeze(1).float().div_(255)
