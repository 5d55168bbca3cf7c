"""What fit, validate, test and predict parse: LightningCLI's parser with short errors and help, the project's own
``--ckpt_path``, the Trainer's batch limits as typed, and the files and import paths a config may name."""

import argparse
import copy
import re
import shutil
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser

from mnist_lite.boundaries import run_folders as runs
from mnist_lite.errors import ConciseErrors

# Import paths no config value may name, added to jsonargparse's own denylist (os, subprocess, builtins.exec, ...):
# the loaders that would turn a file into code.
DENIED_IMPORT_PATHS = ["torch.hub", "torch.load", "torch.jit.load", "torch.package", "torch.utils.cpp_extension"]
DENIED_IMPORT_PATHS += ["numpy.load", "lightning.pytorch.core.saving"]


class ShortHelp(DefaultHelpFormatter):
    """``--help`` in about two lines an option, 140 columns wide: its name, the first sentence of its help, its type
    and default. (A class's full options: ``--model.optimizer.help AdamW``; every value: ``--print_config``.)"""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("width", max(140, shutil.get_terminal_size().columns))
        kwargs.setdefault("max_help_position", 42)
        super().__init__(prog, *args, **kwargs)

    def add_argument(self, action: argparse.Action) -> None:
        if (given := action.help) and given != argparse.SUPPRESS:
            action = copy.copy(action)  # the parser's own stays whole
            text = re.sub(r"\s+", " ", given.replace("``", "`"))
            first = re.split(r"(?<![ (]e\.g)(?<![ (]i\.e)(?<=[a-z0-9)`])\. ", text, maxsplit=1)[0].rstrip(".")
            action.help = f"{first}."
            if action.nargs is None and len(action.option_strings) == 1:  # the help says its type: no metavar
                action.metavar = ""
        super().add_argument(action)


class Parser(ConciseErrors, LightningArgumentParser):
    """LightningCLI's parser with short errors, and the project's own ``--ckpt_path``: Lightning's offers ``hpc``
    and ``registry``, neither of which works here, and a ``weights_only`` switch that every read here sets."""

    def add_method_arguments(self, theclass: Any, themethod: str, *args: Any, **kwargs: Any) -> list[str]:
        kwargs["skip"] = {*(kwargs.get("skip") or ()), "ckpt_path", "weights_only"}
        added = super().add_method_arguments(theclass, themethod, *args, **kwargs)
        if "return_predictions" in added:  # the CSV is written batch by batch: nothing need be held in memory
            self.set_defaults(return_predictions=False)
        self.add_argument("--ckpt_path", type=str | None, default=None, help=f"The checkpoint: {runs.CKPT_HELP}.")
        return [*added, "ckpt_path"]


class DigitTrainer(Trainer):
    """Lightning's Trainer, whose ``limit_*_batches`` keep the type written: 1 is one batch, 1.0 all of them.

    Args:
        limit_train_batches: how many training batches (int) or which fraction of them (float) to run.
        limit_val_batches: the same for validation.
        limit_test_batches: the same for test.
        limit_predict_batches: the same for predict.
    """

    def __init__(  # Lightning annotates them float | int, which a parser reads as a float first
        self,
        *,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        **kwargs: Any,
    ) -> None:
        limits = (limit_train_batches, limit_val_batches, limit_test_batches, limit_predict_batches)
        super().__init__(**dict(zip(LIMITS, limits)), **kwargs)


LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")
