"""The networks: plain ``nn.Module``s, free of Lightning, so their weights move to and from bare PyTorch."""

from torch import Tensor, nn
from torch.nn import functional as F

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel statistics, as torchvision's examples use them
# The class paths a checkpoint may name for its network by itself (checkpoints.py); the first is the default.
NETWORKS = ("mnist_lite.network.CompactCNN",)


class DigitNet(nn.Module):
    """A network for MNIST: normalised images (N, 1, 28, 28) to logits (N, 10). ``model.net`` takes a subclass."""


class CompactCNN(DigitNet):
    """Two 3x3 conv blocks (conv, BatchNorm, ReLU, 2x2 max-pool), then a small MLP head.

    With the defaults this is the seed's network: 13,266 trainable parameters.

    Args:
        channels: the two conv blocks' widths.
        hidden: the MLP head's hidden units.
        dropout: dropout before the last layer.
        bn_momentum: BatchNorm's running-statistics momentum.
    """

    def __init__(
        self, channels: tuple[int, int] = (4, 8), hidden: int = 32, dropout: float = 0.25, bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2, momentum=bn_momentum)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


def normalize(images: Tensor) -> Tensor:
    """Pixels in [0, 1] to the normalised input the networks take."""
    return (images - MEAN) / STD


class Classifier(nn.Module):
    """A fitted network with the normalisation in front: images in [0, 1] (N, 1, 28, 28) to logits (N, 10). What
    export writes and serve runs; its ``state_dict`` is the checkpoint's (``net.*``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(normalize(images))
