"""The bundled data, its verification and repair, the split, and the in-memory batches."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from mnist_lite import data_source
from mnist_lite.datamodule import MNISTDataModule, normalize
from mnist_lite.errors import UserError

RAW = ("MNIST", "raw")


def test_extracted_files_match_the_official_md5(data_dir: Path) -> None:
    for name, md5 in data_source.MNIST_MD5.items():
        assert data_source._md5(data_dir.joinpath(*RAW, name)) == md5


def test_counts_and_label_histogram(data_dir: Path) -> None:
    train_images, train_labels = data_source.load(data_dir, train=True)
    test_images, test_labels = data_source.load(data_dir, train=False)
    assert train_images.shape == (60_000, 28, 28) and train_images.dtype == torch.uint8
    assert test_images.shape == (10_000, 28, 28) and test_images.dtype == torch.uint8
    # The published class counts of MNIST.
    assert train_labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_truncated_file_is_detected_and_reextracted(data_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = data_copy.joinpath(*RAW, "train-images-idx3-ubyte")
    target.write_bytes(target.read_bytes()[:1000])
    data_source.prepare(data_copy)
    assert "fails its MD5 check" in caplog.text
    assert data_source._md5(target) == data_source.MNIST_MD5["train-images-idx3-ubyte"]
    assert not list(data_copy.joinpath(*RAW).glob("*.partial"))


def test_corrupted_byte_is_detected_and_reextracted(data_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = data_copy.joinpath(*RAW, "t10k-labels-idx1-ubyte")
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    data_source.prepare(data_copy)
    assert "t10k-labels-idx1-ubyte fails its MD5 check" in caplog.text
    assert data_source._md5(target) == data_source.MNIST_MD5["t10k-labels-idx1-ubyte"]


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """chmod for ordinary users; root writes through that, so it also gets the immutable attribute."""
    path.chmod(0o500)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o700)


def test_read_only_data_dir_names_the_path(tmp_path: Path) -> None:
    with read_only(tmp_path), pytest.raises(UserError, match=f"cannot create {tmp_path}/data/MNIST/raw"):
        data_source.prepare(tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_without_bundle_or_network_the_error_says_what_to_provide(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(data_source, "BUNDLE_DIR", tmp_path / "no-bundle")

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")  # what torchvision raises offline

    monkeypatch.setitem(data_source.DATASETS, "MNIST", offline)
    with pytest.raises(UserError, match=r"download failed .* Put its four IDX files in .*MNIST/raw"):
        data_source.prepare(tmp_path / "data")


def test_unbundled_dataset_tries_the_download(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def offline(root, train, download):
        calls.append((root, train, download))
        raise RuntimeError("no network")

    monkeypatch.setitem(data_source.DATASETS, "FashionMNIST", offline)
    with pytest.raises(UserError, match="FashionMNIST is not bundled"):
        data_source.prepare(tmp_path, "FashionMNIST")
    assert calls == [(str(tmp_path), True, True)]


def test_split_is_seeded_disjoint_and_complete(data_dir: Path) -> None:
    def split(seed: int) -> MNISTDataModule:
        dm = MNISTDataModule(data_dir=str(data_dir), val_size=5000, split_seed=seed)
        dm.setup("fit")
        return dm

    a, b, c = split(0), split(0), split(1)
    assert len(a.splits["train"]) == 55_000 and len(a.splits["val"]) == 5_000
    assert torch.equal(a.splits["val"].images, b.splits["val"].images)
    assert not torch.equal(a.splits["val"].images, c.splits["val"].images)
    # Disjoint and complete: every training image's label count is accounted for exactly once.
    labels = torch.cat([a.splits["train"].labels, a.splits["val"].labels])
    assert labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_val_size_must_leave_training_images() -> None:
    with pytest.raises(UserError, match="val_size=60000 leaves no training images"):
        MNISTDataModule(val_size=60_000)


def test_batches_are_indexed_uint8_and_normalised_per_batch(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(data_dir), batch_size=64)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (64,) and labels.dtype == torch.int64
    x = normalize(images)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    full = normalize(dm.splits["train"].images[:5000])
    assert abs(full.mean().item()) < 0.05 and abs(full.std().item() - 1) < 0.05
