"""The seed's checks 1, 2 and 5: size, input/output and architecture of the compact CNN."""

import torch
from torch import nn

from mnist_lite.network import CompactCNN


class SeedNet(nn.Module):
    """The seed's network written out in plain PyTorch, as a user's own code would have it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(392, 32)
        self.dropout = nn.Dropout(0.25)
        self.fc2 = nn.Linear(32, 10)


def test_parameter_count_is_the_seeds() -> None:
    count = sum(p.numel() for p in CompactCNN().parameters() if p.requires_grad)
    assert count < 25_000
    assert count == 13_266


def test_batch_of_images_gives_ten_logits_each() -> None:
    for n in (1, 7, 64):
        assert CompactCNN()(torch.randn(n, 1, 28, 28)).shape == (n, 10)


def test_architecture() -> None:
    net = CompactCNN()
    assert (net.conv1.in_channels, net.conv1.out_channels, net.conv1.kernel_size) == (1, 4, (3, 3))
    assert (net.conv2.in_channels, net.conv2.out_channels, net.conv2.kernel_size) == (4, 8, (3, 3))
    assert (net.bn1.num_features, net.bn2.num_features) == (4, 8)
    assert net.dropout.p == 0.25
    assert (net.fc1.in_features, net.fc1.out_features) == (392, 32)
    assert (net.fc2.in_features, net.fc2.out_features) == (32, 10)


def test_weights_move_to_and_from_plain_pytorch() -> None:
    net, plain = CompactCNN(), SeedNet()
    assert list(net.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(net.state_dict())
    net.load_state_dict(plain.state_dict())


def test_widths_are_arguments_with_the_seeds_defaults() -> None:
    wide = CompactCNN(channels=(8, 16), hidden=64, dropout=0.1)
    assert wide.fc1.in_features == 16 * 7 * 7
    assert wide(torch.randn(2, 1, 28, 28)).shape == (2, 10)
