"""The compact CNN: a plain ``nn.Module``, free of Lightning, so its weights move to and from bare PyTorch."""

from torch import Tensor, nn
from torch.nn import functional as F


class CompactCNN(nn.Module):
    """Two 3x3 conv blocks (conv, BatchNorm, ReLU, 2x2 max-pool), then a small MLP head.

    With the defaults this is the seed's network: 13,266 trainable parameters. The input is a batch of
    normalised 1x28x28 images; the output is 10 logits per image.
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
