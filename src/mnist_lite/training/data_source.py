"""Where the digit files come from: the MNIST copy bundled in this package, or torchvision's download.

``prepare`` leaves ``<data_dir>/<dataset>/raw/`` holding the four IDX files that torchvision's dataset
classes read with ``download=False``; ``load`` reads one split into memory as ``uint8`` tensors.
"""

import gzip
import hashlib
import logging
import os
import tempfile
from importlib.resources import files
from pathlib import Path

import torch
from torchvision import datasets

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
BUNDLE_DIR = Path(str(files("mnist_lite") / "data" / "mnist"))


def prepare(data_dir: str | Path, dataset: str = "MNIST") -> None:
    """Make ``<data_dir>/<dataset>/raw`` hold verified IDX files, from the bundle if it can, else by download."""
    raw = Path(data_dir) / dataset / "raw"
    if dataset != "MNIST":
        _download(Path(data_dir), dataset)
    elif _bundle_is_present():
        _extract_bundle(raw)
    elif not _raw_is_valid(raw):
        _download(Path(data_dir), dataset)


def load(data_dir: str | Path, dataset: str = "MNIST", train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as ``(images, labels)``: ``uint8`` of shape (N, 28, 28) and ``int64`` of shape (N,)."""
    split = DATASETS[dataset](str(data_dir), train=train, download=False)
    return split.data, split.targets


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images (N, 28, 28) to floats in [0, 1] of shape (N, 1, 28, 28)."""
    return images.unsqueeze(1).float().div_(255)


def _bundle_is_present() -> bool:
    return all((BUNDLE_DIR / f"{name}.gz").is_file() for name in MNIST_MD5)


def _raw_is_valid(raw: Path) -> bool:
    return all((raw / name).is_file() and _md5(raw / name) == md5 for name, md5 in MNIST_MD5.items())


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _extract_bundle(raw: Path) -> None:
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {raw}: {e.strerror}. Set data.data_dir to a writable folder.") from None
    for name, md5 in MNIST_MD5.items():
        target = raw / name
        if target.is_file():
            if _md5(target) == md5:
                continue
            log.warning(
                "%s fails its MD5 check (truncated or corrupt): re-extracting it from the bundled copy.", target
            )
        _extract(BUNDLE_DIR / f"{name}.gz", target, md5)


def _extract(source: Path, target: Path, md5: str) -> None:
    # Written under a temporary name of its own and renamed once verified, so no half-written file keeps the real
    # name, and runs extracting at the same moment never share a temporary file (the last rename wins; all agree).
    digest = hashlib.md5()
    partial: Path | None = None
    try:
        with (
            gzip.open(source, "rb") as fin,
            tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False
            ) as fout,
        ):
            partial = Path(fout.name)
            while chunk := fin.read(1 << 20):
                digest.update(chunk)
                fout.write(chunk)
        if digest.hexdigest() != md5:
            raise UserError(f"the bundled {source.name} fails its MD5 check: reinstall mnist-lite.")
        partial.chmod(0o644)  # a temporary file is private; the data is not
        os.replace(partial, target)
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror}. Set data.data_dir to a writable folder.") from None
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)


def _download(data_dir: Path, dataset: str) -> None:
    try:
        for train in (True, False):
            DATASETS[dataset](str(data_dir), train=train, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, ... once every mirror has failed
        raise UserError(
            f"{dataset} is not bundled here and its download failed ({e}). "
            f"Put its four IDX files in {data_dir / dataset / 'raw'} and run again."
        ) from None
