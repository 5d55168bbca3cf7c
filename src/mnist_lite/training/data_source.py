"""Where the digit files come from: the MNIST copy bundled in this package, or torchvision's download.

``prepare`` leaves ``<data_dir>/<dataset>/raw/`` holding the four IDX files that torchvision's dataset
classes read with ``download=False``; ``load`` reads one split into memory as ``uint8`` tensors.
"""

import gzip
import hashlib
import logging
import zlib
from importlib.resources import files as package_files
from pathlib import Path

import torch
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from mnist_lite.boundaries import files
from mnist_lite.errors import UserError

log = logging.getLogger(__name__)

DATASETS = {"MNIST": datasets.MNIST, "FashionMNIST": datasets.FashionMNIST, "KMNIST": datasets.KMNIST}

# The official MD5 sums of the uncompressed MNIST files (the bundled .gz wrappers were re-made).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
BUNDLE_DIR = Path(str(package_files("mnist_lite") / "data" / "mnist"))


def prepare(data_dir: str | Path, dataset: str = "MNIST") -> None:
    """Make ``<data_dir>/<dataset>/raw`` hold verified IDX files, from the bundle if it can, else by download."""
    raw = Path(data_dir) / dataset / "raw"
    if dataset != "MNIST":
        _download(Path(data_dir), dataset)
    elif all((BUNDLE_DIR / f"{name}.gz").is_file() for name in MNIST_MD5):
        _extract_bundle(raw)
    elif not all(check_integrity(str(raw / name), md5) for name, md5 in MNIST_MD5.items()):
        _download(Path(data_dir), dataset)


def load(data_dir: str | Path, dataset: str = "MNIST", train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as ``(images, labels)``: ``uint8`` of shape (N, 28, 28) and ``int64`` of shape (N,)."""
    split = DATASETS[dataset](str(data_dir), train=train, download=False)
    return split.data, split.targets


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images (N, 28, 28) to floats in [0, 1] of shape (N, 1, 28, 28)."""
    return images.unsqueeze(1).float().div_(255)


def _extract_bundle(raw: Path) -> None:
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {raw}: {e.strerror}. Set data.data_dir to a writable folder.") from None
    for name, md5 in MNIST_MD5.items():
        target = raw / name
        if check_integrity(str(target), md5):
            continue
        if target.is_file():
            log.warning(
                "%s fails its MD5 check (truncated or corrupt): re-extracting it from the bundled copy.", target
            )
        try:
            data = gzip.decompress((BUNDLE_DIR / f"{name}.gz").read_bytes())
        except (OSError, EOFError, zlib.error):
            data = b""  # refused below, as any damage to the bundle
        if hashlib.md5(data).hexdigest() != md5:
            raise UserError(f"the bundled {name}.gz fails its MD5 check: reinstall mnist-lite.")
        try:  # never a half-written file under the real name, whatever runs extract at the same moment
            files.write_atomically(data, target)
        except OSError as e:
            raise UserError(f"cannot write {target}: {e.strerror}. Set data.data_dir to a writable folder.") from None


def _download(data_dir: Path, dataset: str) -> None:
    try:
        for train in (True, False):
            DATASETS[dataset](str(data_dir), train=train, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, ... once every mirror has failed
        raise UserError(
            f"{dataset} is not bundled here and its download failed ({e}). "
            f"Put its four IDX files in {data_dir / dataset / 'raw'} and run again."
        ) from None
