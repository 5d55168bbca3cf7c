"""The networks: plain ``nn.Module``s, free of Lightning, so their weights move to and from bare PyTorch."""

from torch import Tensor, nn
from torch.nn import functional as F

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel statistics, as torchvision's examples use them
# The class paths a checkpoint may name for its network by itself (checkpoints.py); the first is the default.
NETWORKS = ("mnist_lite.network.CompactCNN", "mnist_lite.network.OneEpochCNN")


class DigitNet(nn.Module):
    """A network for MNIST: normalised images (N, 1, 28, 28) to logits (N, 10). ``model.net`` takes a subclass."""


class CompactCNN(DigitNet):
    """The assignment's network with the defaults (13,266 parameters): two conv blocks, then a small MLP head.

    Each block is a 3x3 conv, BatchNorm, ReLU and a 2x2 max-pool.

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


class OneEpochCNN(DigitNet):
    """Four conv blocks and a linear read-out, for accuracy after one epoch (configs/one_epoch.yaml): 19,786 parameters.

    Each block is a 3x3 conv, BatchNorm and ReLU, on the image folded into 4 channels of 14x14 (every pixel kept, a
    quarter the cost), max-pooled to 7x7 and 3x3.

    Args:
        widths: the four conv blocks' widths.
        bn_momentum: BatchNorm's running-statistics momentum.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 16, 32, 32), bn_momentum: float = 0.1) -> None:
        super().__init__()
        c1, c2, c3, c4 = widths

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            conv = nn.Conv2d(inputs, outputs, 3, padding=1, bias=False)  # the BatchNorm after it has the bias
            return [conv, nn.BatchNorm2d(outputs, momentum=bn_momentum), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            nn.PixelUnshuffle(2),
            *block(4, c1),
            *block(c1, c2),
            nn.MaxPool2d(2),
            *block(c2, c3),
            *block(c3, c4),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(c4 * 3 * 3, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


class Classifier(nn.Module):
    """A network with the normalisation in front: images in [0, 1] (N, 1, 28, 28) to logits (N, 10). What export
    writes and serve runs; the LightningModule (training/module.py) is one too: a checkpoint holds ``net.*``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - MEAN) / STD)
