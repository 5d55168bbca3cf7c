"""A module a hostile checkpoint names: importing it, or building its network, leaves a marker file."""

import os
from pathlib import Path

from mnist_lite.network import CompactCNN

MARKER_ENV = "MNIST_LITE_TROJAN_MARKER"
if MARKER_ENV in os.environ:
    Path(os.environ[MARKER_ENV]).write_text("imported")


class AlwaysThree(CompactCNN):
    """A real subclass of the project's network, with its very tensors, that answers 3 whatever it is shown."""

    def forward(self, x):
        logits = super().forward(x) * 0
        logits[:, 3] = 1
        return logits
