"""The seed's check 6, on the project's own objects: model < 5 MB, a batch of 64 < 2 MB, one step < 10 MB."""

import io
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from mnist_lite.boundaries.checkpoints import load_model
from mnist_lite.training.datamodule import MNISTDataModule
from mnist_lite.training.module import MNISTClassifier

MB = 2**20


def test_fitted_model_and_its_checkpoint_are_under_5_mb(tiny_checkpoint: Path) -> None:
    net = load_model(tiny_checkpoint).net
    on_disk = io.BytesIO()
    torch.save(net.state_dict(), on_disk)
    assert on_disk.tell() / MB < 5
    assert tiny_checkpoint.stat().st_size / MB < 5  # with the optimizer's state and the loops'


def test_a_training_batch_of_64_is_under_2_mb(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(data_dir), batch_size=64)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    images, _ = batch
    model_input, _ = dm.on_after_batch_transfer(batch, 0)
    assert images.dtype == torch.uint8 and images.numel() * images.element_size() / MB < 2  # as held and batched
    assert model_input.numel() * model_input.element_size() / MB < 2  # as the network receives it


def _peak_bytes_of_training_step(batch_size: int) -> int:
    model = MNISTClassifier()
    optimizer = torch.optim.AdamW(model.parameters())
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    step()  # the optimizer's state is allocated on the first step; measure a steady one
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def test_training_step_peak_memory_is_measured_and_under_10_mb() -> None:
    peak64 = _peak_bytes_of_training_step(64)
    assert 0 < peak64 / MB < 10
    # A real measurement grows with the batch: activations of 256 images need more than those of 64.
    assert _peak_bytes_of_training_step(256) > peak64
