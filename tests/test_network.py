"""The seed's checks 1, 2 and 5: size, input/output and architecture of the compact CNN, and the same checks for
OneEpochCNN, the network of configs/one_epoch.yaml."""

import pytest
import torch
from torch.nn import functional as F

from mnist_lite.network import NETWORKS, CompactCNN, DigitNet, OneEpochCNN

from helpers import CPU, ROOT, seed_net


def test_parameter_count_is_the_promised_one() -> None:
    count = sum(p.numel() for p in CompactCNN().parameters() if p.requires_grad)
    assert count == 13_266  # the README's figure, under the seed's promise of 25,000


def test_batch_of_images_gives_ten_logits_each() -> None:
    for n in (1, 7, 64):
        assert CompactCNN()(torch.randn(n, 1, 28, 28)).shape == (n, 10)


def test_architecture_is_the_seeds_tensor_for_tensor() -> None:
    """A strict load both ways pins every layer's kind, order and shape against the seed's own module."""
    net, plain = CompactCNN(), seed_net()
    assert list(net.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(net.state_dict())
    net.load_state_dict(plain.state_dict())
    net.eval(), plain.eval()
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(net(x), plain(x))  # and the same computation, dropout included


def test_widths_are_arguments_with_the_seeds_defaults() -> None:
    wide = CompactCNN(channels=(8, 16), hidden=64, dropout=0.1)
    assert wide(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in CompactCNN().parameters())


def test_the_one_epoch_network_is_under_the_seeds_budget() -> None:
    count = sum(p.numel() for p in OneEpochCNN().parameters() if p.requires_grad)
    assert count == 19_786 and count < 25_000


@pytest.mark.parametrize("net", [CompactCNN, OneEpochCNN])
def test_each_network_gives_ten_logits_an_image_and_is_a_digit_net(net: type) -> None:
    assert issubclass(net, DigitNet) and f"mnist_lite.network.{net.__name__}" in NETWORKS
    for n in (1, 7, 64):
        assert net()(torch.randn(n, 1, 28, 28)).shape == (n, 10)


def test_the_one_epoch_network_folds_the_image_without_losing_a_pixel() -> None:
    """Its first layer sees every pixel: the 2x2 fold is a rearrangement, undone exactly."""
    net, x = OneEpochCNN(), torch.randn(3, 1, 28, 28)
    folded = net.features[0](x)
    assert folded.shape == (3, 4, 14, 14) and torch.equal(F.pixel_shuffle(folded, 2), x)
    assert OneEpochCNN(widths=(8, 8, 16, 16))(x).shape == (3, 10)


# The course's budgets, per shipped config: parameters and epochs, as the config builds them on configs/cpu.yaml.
BUDGETS = {
    "cpu.yaml": (25_000, 1),
    "one_epoch.yaml": (25_000, 1),
    "under_20k.yaml": (20_000, 19),
    "under_8k.yaml": (8_000, 15),
}


@pytest.mark.parametrize("config", list(BUDGETS))
def test_each_shipped_config_keeps_its_parameter_and_epoch_budget(config: str) -> None:
    from mnist_lite.training.cli import build  # Lightning: only this test needs it

    built = build(["--config", str(CPU), "--config", str(ROOT / "configs" / config)], run=False)
    parameters, epochs = BUDGETS[config]
    assert sum(p.numel() for p in built.model.net.parameters()) < parameters
    assert built.trainer.max_epochs <= epochs
