"""MNIST as a LightningDataModule: splits in memory as ``uint8``, batches by indexing, scaled to [0, 1]."""

import warnings
from collections.abc import Iterator, Sized
from itertools import islice
from typing import Any, cast

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from mnist_lite.boundaries.images import DigitFiles
from mnist_lite.errors import UserError
from mnist_lite.training import data_source, own_digits
from mnist_lite.training.augmentations import TrainingAugmentation
from mnist_lite.training.data_source import to_unit_range

TRAIN_SIZE = 60_000


def split_indices(size: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Training and validation indices of a seeded split of ``size`` training images."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


class InMemoryDigits(Dataset):
    """Images and labels held as tensors. The DataLoader hands ``__getitems__`` a whole batch of indices, so a batch
    is one ``index_select`` of whole images rather than single samples collated one by one."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        return self.take(torch.as_tensor(indices))

    def take(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.images.index_select(0, index), self.labels.index_select(0, index)


class EpochShards(DistributedSampler):
    """This rank's shard of a shuffle that depends only on (seed, epoch), with a state that ``StatefulDataLoader``
    saves: a run stopped mid-epoch goes on at its next sample. Lightning keeps a DistributedSampler as given."""

    def __init__(self, dataset: Sized, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        super().__init__(cast(Dataset, dataset), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.given = (0, 0)  # (epoch, samples given in it)
        self.resume_at = (-1, 0)

    def __iter__(self) -> Iterator[int]:
        epoch, done = self.resume_at
        skip = done if epoch == self.epoch else 0  # a state saved at its epoch's last batch resumes the next one
        self.resume_at = (-1, 0)
        for given, index in enumerate(islice(super().__iter__(), skip, None), skip + 1):
            self.given = (self.epoch, given)
            yield index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.given[0], "given": self.given[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = (state["epoch"], state["given"])


def _already_batched(batch: Any) -> Any:
    return batch


class MNISTDataModule(LightningDataModule):
    """MNIST with a seeded validation split carved from the training images.

    Args:
        data_dir: where ``MNIST/raw/`` is extracted (from the copy bundled with the package) and read.
        val_size: training images held out for validation.
        split_seed: seed of the train/validation split, apart from the run's seed so the split never moves.
        batch_size: training batch size (per device under DDP).
        eval_batch_size: batch size for validation, test and predict.
        num_workers: DataLoader worker processes; 0 is fastest for in-memory tensors.
        augment: training-time augmentations by registry name, each with its parameters (``{}`` for the
            defaults), applied in order to every training batch; validation and test are never augmented.
        predict_path: an image file or a folder of them (PNG, JPEG, BMP, TIFF, .npy, IDX) for ``predict``;
            without it, ``predict`` runs on the test set.
        own_digits: a folder of your own labelled digits, one subfolder per digit (``0/`` to ``9/``), as
            torchvision's ImageFolder; each file is read as ``predict`` reads it. Added to the training images.
        own_digits_only: train on ``own_digits`` alone, to fine-tune a fitted model (configs/finetune.yaml).
    """

    def __init__(
        self,
        data_dir: str = "data",
        val_size: PositiveInt = 5000,
        split_seed: int = 0,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 1000,
        num_workers: NonNegativeInt = 0,
        augment: dict[str, dict[str, Any] | None] | None = None,
        predict_path: str | None = None,
        own_digits: str | None = None,
        own_digits_only: bool = False,
    ) -> None:
        super().__init__()
        if val_size >= TRAIN_SIZE:
            raise UserError(f"data.val_size={val_size} leaves no training images: it must be below {TRAIN_SIZE}.")
        if batch_size > (train := TRAIN_SIZE - val_size):
            raise UserError(f"data.batch_size={batch_size} is more than the {train:,} training images: choose fewer.")
        if own_digits_only and own_digits is None:
            raise UserError("data.own_digits_only needs data.own_digits: the folder of your digits.")
        self.save_hyperparameters()
        self.augment = TrainingAugmentation(augment) if augment else None
        self.splits: dict[str, InMemoryDigits | DigitFiles] = {}
        self.train_loader: StatefulDataLoader | None = None
        self.loader_state: dict[str, Any] | None = None  # from the checkpoint being resumed

    def prepare_data(self) -> None:
        if self.trainer is None or not self.trainer.predicting or self.hparams.predict_path is None:
            data_source.prepare(self.hparams.data_dir)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if stage in ("fit", "validate") and "train" not in self.splits:
            every = InMemoryDigits(*data_source.load(hp.data_dir, train=True))
            train, val = split_indices(len(every), hp.val_size, hp.split_seed)
            images, labels = every.take(train)
            if hp.own_digits is not None and stage == "fit":  # validate uses MNIST's held-out split alone
                own_images, own_labels = own_digits.read(hp.own_digits)
                images = own_images if hp.own_digits_only else torch.cat([images, own_images])
                labels = own_labels if hp.own_digits_only else torch.cat([labels, own_labels])
            self.splits["train"] = InMemoryDigits(images, labels)
            self.splits["val"] = InMemoryDigits(*every.take(val))
        if stage == "predict" and hp.predict_path is not None:
            self.splits["predict"] = DigitFiles(hp.predict_path)
        elif stage in ("test", "predict") and "test" not in self.splits:
            self.splits["test"] = InMemoryDigits(*data_source.load(hp.data_dir, train=False))

    def train_dataloader(self) -> StatefulDataLoader:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = EpochShards(self.splits["train"], rank, world_size, torch.initial_seed())
        with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital, which torch 2.14 deprecates
            warnings.filterwarnings("ignore", "'set_vital' is deprecated", UserWarning)
            self.train_loader = StatefulDataLoader(self.splits["train"], sampler=sampler, **self._options("train"))
        if self.loader_state is not None:
            self.train_loader.load_state_dict(self.loader_state)
            self.loader_state = None
        return self.train_loader

    # Lightning's fit loop saves a StatefulDataLoader's state too, but drops it on resume when the schedule asks
    # for trainer.estimated_stepping_batches (OneCycleLR; Lightning issue #20550): the DataModule's hooks carry it.
    def state_dict(self) -> dict[str, Any]:
        return {"train_loader": self.train_loader.state_dict()} if self.train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loader_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], **self._options("eval"))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], **self._options("eval"))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["predict" if "predict" in self.splits else "test"], **self._options("eval"))

    def _options(self, kind: str) -> dict[str, Any]:
        workers = self.hparams.num_workers
        return {
            "batch_size": self.hparams.batch_size if kind == "train" else self.hparams.eval_batch_size,
            "collate_fn": _already_batched,
            "generator": torch.Generator(),  # its seed draw must not consume the global RNG that dropout uses
            "num_workers": workers,
            "persistent_workers": workers > 0,
        }

    def on_after_batch_transfer(self, batch: tuple[Tensor, Any], dataloader_idx: int) -> tuple[Tensor, Any]:
        images, labels = batch  # labels, or (path, index, error) per image when predicting on files
        images = to_unit_range(images)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return images, labels  # pixels in [0, 1]: the model normalises its own input
