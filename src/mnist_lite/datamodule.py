"""MNIST as a LightningDataModule: whole splits in memory as ``uint8``, batches made by indexing, normalised per batch."""

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from jsonargparse.typing import PositiveInt, NonNegativeInt
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mnist_lite import data_source
from mnist_lite.augmentations import TrainingAugmentation
from mnist_lite.errors import UserError
from mnist_lite.images import DigitFiles

TRAIN_SIZE = 60_000  # all three datasets in data_source.DATASETS have 60k training images
MEAN, STD = 0.1307, 0.3081  # MNIST's pixel statistics, as torchvision's examples use them


def to_unit_range(images: Tensor) -> Tensor:
    """``uint8`` images (N, 28, 28) to floats in [0, 1] of shape (N, 1, 28, 28)."""
    return images.unsqueeze(1).float().div_(255)


def normalize(images: Tensor) -> Tensor:
    """``uint8`` images (N, 28, 28), or floats in [0, 1] of shape (N, 1, 28, 28), to the network's input."""
    if images.dtype == torch.uint8:
        images = to_unit_range(images)
    return (images - MEAN) / STD


class InMemoryDigits(Dataset):
    """Images and labels held as tensors.

    The DataLoader hands ``__getitems__`` a whole batch of indices, so a batch is one tensor index rather than
    64 single samples collated one by one (several times faster per batch).
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


class EpochShuffler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch), so a run stopped mid-epoch can resume at the very batch.

    torch's RandomSampler draws from the global generator, whose state a checkpoint does not hold; this one
    re-creates the epoch's order from its seed and skips the samples the restored run had already trained on.
    """

    def __init__(self, size: int, seed: int, already_done: Callable[[], int] = lambda: 0) -> None:
        self.size, self.seed, self.epoch, self.already_done = size, seed, 0, already_done

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        skip = self.already_done()  # non-zero only when a run restored mid-epoch starts iterating
        self.epoch += 1  # where nobody calls set_epoch (DDP wraps this sampler), the next epoch still differs
        return iter(order[skip:].tolist())


def _already_batched(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


class MNISTDataModule(LightningDataModule):
    """MNIST (or a sibling dataset) with a seeded validation split carved from the training images.

    Args:
        data_dir: where ``<dataset>/raw/`` is written and read.
        dataset: MNIST is bundled with the package; the others are downloaded by torchvision.
        val_size: training images held out for validation.
        split_seed: seed of the train/validation split, apart from the run's seed so the split never moves.
        batch_size: training batch size (per device under DDP).
        eval_batch_size: batch size for validation, test and predict.
        num_workers: DataLoader worker processes; 0 is fastest for in-memory tensors.
        augment: training-time augmentations by registry name, each with its parameters (``{}`` for the
            defaults), applied in order to every training batch; validation and test are never augmented.
        predict_path: an image file or a folder of them (PNG, JPEG, BMP, TIFF, .npy, IDX) for ``predict``;
            without it, ``predict`` runs on the test set.
    """

    def __init__(
        self,
        data_dir: str = "data",
        dataset: Literal["MNIST", "FashionMNIST", "KMNIST"] = "MNIST",
        val_size: PositiveInt = 5000,
        split_seed: int = 0,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        num_workers: NonNegativeInt = 0,
        augment: dict[str, dict[str, Any] | None] | None = None,
        predict_path: str | None = None,
    ) -> None:
        super().__init__()
        if val_size >= TRAIN_SIZE:
            raise UserError(f"data.val_size={val_size} leaves no training images: it must be below {TRAIN_SIZE}.")
        self.save_hyperparameters()
        self.augment = TrainingAugmentation(augment) if augment else None
        self.splits: dict[str, InMemoryDigits] = {}

    def prepare_data(self) -> None:
        if self.trainer is None or not self.trainer.predicting or self.hparams.predict_path is None:
            data_source.prepare(self.hparams.data_dir, self.hparams.dataset)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage in ("fit", "validate") and "train" not in self.splits:
            images, labels = data_source.load(hp.data_dir, hp.dataset, train=True)
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(hp.split_seed))
            val, train = order[: hp.val_size], order[hp.val_size :]
            self.splits["train"] = InMemoryDigits(images[train], labels[train])
            self.splits["val"] = InMemoryDigits(images[val], labels[val])
        if stage == "predict" and hp.predict_path is not None:
            self.splits["predict"] = DigitFiles(hp.predict_path)
        elif stage in ("test", "predict") and "test" not in self.splits:
            self.splits["test"] = InMemoryDigits(*data_source.load(hp.data_dir, hp.dataset, train=False))

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffler(len(self.splits["train"]), torch.initial_seed(), self._samples_done_this_epoch)
        return self._loader("train", self.hparams.batch_size, sampler=sampler)

    def _samples_done_this_epoch(self) -> int:
        """Training samples this epoch has already seen: non-zero only in a run restored from a mid-epoch checkpoint."""
        if self.trainer is None:
            return 0
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= self.trainer.num_training_batches:
            return 0
        return done * self.hparams.batch_size * self.trainer.world_size  # DDP strides this order over the ranks

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if "predict" in self.splits else "test", self.hparams.eval_batch_size)

    def _loader(self, split: str, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            self.splits[split],
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_already_batched,
            generator=torch.Generator(),  # its seed draw must not consume the global RNG that dropout uses
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def on_after_batch_transfer(self, batch: tuple[Tensor, Any], dataloader_idx: int) -> tuple[Tensor, Any]:
        images, labels = batch  # labels, or (path, index, error) per image when predicting on files
        images = to_unit_range(images)
        if self.augment is not None and self.trainer.training:
            images = self.augment(images)
        return normalize(images), labels
