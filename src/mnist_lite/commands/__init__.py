"""The tools beside Lightning's trainer subcommands. Each is a function; its signature and docstring are its
options and its ``--help``, read by jsonargparse, so types, defaults and help live in one place."""

from collections.abc import Callable

from mnist_lite.commands.augment import augment
from mnist_lite.commands.curves import curves
from mnist_lite.commands.export import export
from mnist_lite.commands.serve import serve

TOOLS: dict[str, Callable[..., None]] = {"augment": augment, "export": export, "curves": curves, "serve": serve}
