"""The bundled data, its verification and repair, the split, and the in-memory batches."""

from pathlib import Path

import pytest
import torch
from torchvision.datasets.utils import check_integrity

from mnist_lite.errors import UserError
from mnist_lite.training import data_source
from mnist_lite.training.data_source import to_unit_range
from mnist_lite.training.datamodule import InMemoryDigits, MNISTDataModule, split_indices
from mnist_lite.training.module import MNISTClassifier

from helpers import read_only

RAW = ("MNIST", "raw")


def test_extracted_files_match_the_official_md5(data_dir: Path) -> None:
    for name, md5 in data_source.MNIST_MD5.items():
        assert check_integrity(str(data_dir.joinpath(*RAW, name)), md5)


def test_counts_and_label_histogram(data_dir: Path) -> None:
    train_images, train_labels = data_source.load(data_dir, train=True)
    test_images, test_labels = data_source.load(data_dir, train=False)
    assert train_images.shape == (60_000, 28, 28) and train_images.dtype == torch.uint8
    assert test_images.shape == (10_000, 28, 28) and test_images.dtype == torch.uint8
    # The published class counts of MNIST.
    assert train_labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("train-images-idx3-ubyte", "truncated"),
        ("t10k-labels-idx1-ubyte", "flipped_byte"),
        ("train-labels-idx1-ubyte", "wrong_magic"),
        ("train-labels-idx1-ubyte", "wrong_count"),
    ],
)
def test_damaged_file_is_detected_and_reextracted(name: str, damage: str, data_copy: Path, caplog) -> None:
    target = data_copy.joinpath(*RAW, name)
    data = bytearray(target.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 3]
    elif damage == "flipped_byte":
        data[100] ^= 0xFF
    elif damage == "wrong_magic":
        data[2:4] = b"\x0d\x03"
    else:
        data[4:8] = (59_999).to_bytes(4, "big")
    target.write_bytes(bytes(data))
    data_source.prepare(data_copy)
    assert f"{name} fails its MD5 check" in caplog.text
    assert check_integrity(str(target), data_source.MNIST_MD5[name])
    assert not list(data_copy.joinpath(*RAW).glob("*.partial"))


def test_read_only_data_dir_names_the_path(tmp_path: Path) -> None:
    with read_only(tmp_path), pytest.raises(UserError, match=f"cannot create {tmp_path}/data/MNIST/raw"):
        data_source.prepare(tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_without_the_bundle_the_error_says_what_to_provide(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(data_source, "BUNDLE_DIR", tmp_path / "no-bundle")
    with pytest.raises(UserError, match=r"fails its MD5 check: reinstall mnist-lite, or put .* in .*MNIST/raw"):
        data_source.prepare(tmp_path / "data")


def test_split_indices_are_seeded_disjoint_and_complete() -> None:
    train, val = split_indices(60_000, 5_000, seed=0)
    assert len(train) == 55_000 and len(val) == 5_000
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(60_000))
    assert torch.equal(val, split_indices(60_000, 5_000, seed=0)[1])
    assert not torch.equal(val, split_indices(60_000, 5_000, seed=1)[1])


def test_datamodule_holds_the_split_it_names(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(data_dir), val_size=5000, split_seed=3)
    dm.setup("fit")
    images, labels = data_source.load(data_dir, train=True)
    train, val = split_indices(60_000, 5_000, seed=3)
    held, trained = dm.splits["val"], dm.splits["train"]
    assert isinstance(held, InMemoryDigits) and isinstance(trained, InMemoryDigits)
    assert torch.equal(held.images, images[val]) and torch.equal(held.labels, labels[val])
    assert torch.equal(trained.images, images[train])


def test_val_size_must_leave_training_images() -> None:
    with pytest.raises(UserError, match="val_size=60000 leaves no training images"):
        MNISTDataModule(val_size=60_000)


def test_batches_are_indexed_uint8_then_pixels_after_transfer(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(data_dir), batch_size=64)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    images, labels = batch
    assert images.shape == (64, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (64,) and labels.dtype == torch.int64
    x, same_labels = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and same_labels is labels
    assert torch.equal(x, images[:, None].float() / 255)  # pixels in [0, 1]: what people's images are


def test_the_model_normalises_its_own_input(data_dir: Path) -> None:
    images, _ = data_source.load(data_dir, train=True)
    pixels = to_unit_range(images[:5000])
    model = MNISTClassifier().eval()
    seen = []
    model.net.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(pixels)
    assert abs(seen[0].mean().item()) < 0.05 and abs(seen[0].std().item() - 1) < 0.05  # MNIST's statistics
    assert list(model.state_dict()) == [f"net.{k}" for k in model.net.state_dict()]  # no tensors beside the seed's


def _labels(batches) -> list[list[int]]:
    return [labels.tolist() for _, labels in batches]


def test_the_training_loader_resumes_at_its_next_batch_and_after_an_epochs_end_at_the_next_epoch(
    data_dir: Path,
) -> None:
    """The state a checkpoint keeps (the DataModule's, which holds StatefulDataLoader's): a new DataModule given it
    goes on with the batch after the last one trained; a state from an epoch's last batch starts the next epoch."""
    modules = [MNISTDataModule(data_dir=str(data_dir), batch_size=500) for _ in range(3)]
    for dm in modules:
        dm.setup("fit")
    stopped = modules[0].train_dataloader()
    stopped.sampler.set_epoch(1)  # as Lightning does at every epoch start
    batches = iter(stopped)
    first = _labels(next(batches) for _ in range(3))
    modules[1].load_state_dict(modules[0].state_dict())
    resumed = modules[1].train_dataloader()
    resumed.sampler.set_epoch(1)
    rest = _labels(batches)
    assert len(first) + len(rest) == 110 and _labels(resumed) == rest
    modules[2].load_state_dict(modules[0].state_dict())  # saved on the epoch's last batch
    next_epoch = modules[2].train_dataloader()
    next_epoch.sampler.set_epoch(2)
    fresh = modules[0].train_dataloader()
    fresh.sampler.set_epoch(2)
    assert _labels(next_epoch) == _labels(fresh) != [*first, *rest]
