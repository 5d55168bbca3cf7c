"""mnist-lite: a 13,266-parameter CNN for MNIST, trained with Lightning from YAML configs."""

from importlib.metadata import version

__version__ = version("mnist-lite")
