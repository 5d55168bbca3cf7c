"""The seed's check 6: model < 5 MB, a batch of 64 < 2 MB, and all of one training step < 10 MB."""

import io

import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

from mnist_lite.network import CompactCNN

MB = 2**20


def test_model_is_under_5_mb() -> None:
    net = CompactCNN()
    in_memory = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    on_disk = io.BytesIO()
    torch.save(net.state_dict(), on_disk)
    assert in_memory / MB < 5
    assert on_disk.tell() / MB < 5


def test_batch_of_64_is_under_2_mb() -> None:
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)  # as the DataModule holds them
    model_input = images.unsqueeze(1).float()  # as the network receives them
    assert images.numel() * images.element_size() / MB < 2
    assert model_input.numel() * model_input.element_size() / MB < 2


def _peak_bytes_of_training_step(batch_size: int) -> int:
    net = CompactCNN()
    optimizer = torch.optim.AdamW(net.parameters())
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
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
