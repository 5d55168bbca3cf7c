"""The ``mnist-lite`` command: fit, validate, test and predict go to LightningCLI (``training/cli.py``), the tools
to plain functions (``commands/``). Nothing heavy is imported here, so ``mnist-lite --help`` answers at once."""

import difflib
import gc
import os
import signal
import sys
from importlib import import_module
from types import ModuleType

from mnist_lite import __version__
from mnist_lite.errors import UserError, fail

# Shown by `mnist-lite --help` without importing anything; a tool's docstring starts with its line (a test checks).
SUBCOMMANDS = {
    "fit": "Train a model from YAML configs; each run gets its own folder under lightning_logs/.",
    "validate": "Score a checkpoint on the validation split, into a folder inside the run it came from.",
    "test": "Score a checkpoint on the 10,000 test images and draw where it errs, inside its run's folder.",
    "predict": "Read digits from image files (or the test set) with a checkpoint, into a CSV.",
    "runs": "List the runs under a log folder: when, configs, parameters, epochs, val_acc, test_acc, checkpoints.",
    "augment": "Draw the augmentations of one training image into a PNG.",
    "curves": "Plot a run's loss and accuracy against the training step, from its metrics.csv.",
    "export": "Write a fitted model as ONNX, a torch.export program or a state_dict, all or nothing.",
    "serve": "Serve a page to draw digits on and watch the model read them, and the API behind it.",
    "sweep": "Search hyperparameters with Optuna: each trial is a real fit of the configs with the trial's values.",
}
TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, summary in SUBCOMMANDS.items())
    return (
        "usage: mnist-lite SUBCOMMAND [options]\n\n"
        "Train and use a compact MNIST CNN, configured by YAML.\n\n"
        f"subcommands:\n{listing}\n\n"
        "Each subcommand takes --help, e.g. mnist-lite fit --help. mnist-lite --version prints the version."
    )


def load(module: str) -> ModuleType:
    """Import a subcommand's module with the cyclic collector paused, then freeze what it made: torch's and
    Lightning's objects live until exit, and no collection need walk them again (benchmarks/startup.py)."""
    if module in sys.modules:
        return sys.modules[module]
    enabled = gc.isenabled()
    gc.disable()
    try:
        return import_module(module)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def main(args: list[str] | None = None) -> None:
    """Run ``mnist-lite`` with ``args`` (default: the command line). A reader that stops early (``mnist-lite runs |
    head -2``) ends the command quietly with 141, the status of a command SIGPIPE stopped, as ``ls`` ends."""
    try:
        try:
            _main(args)
        finally:  # an exit too, help's included, is quiet on a closed pipe
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit finds no pipe either
        sys.exit(128 + signal.SIGPIPE)
    except KeyboardInterrupt:  # Ctrl-C outside training (a fit's says what it saved: callbacks/interrupt.py)
        print("mnist-lite: stopped by Ctrl-C", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def _main(args: list[str] | None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    name = argv[0] if argv else None
    if name in ("-h", "--help"):
        print(usage())
    elif name in ("-V", "--version"):
        print(f"mnist-lite {__version__}")
    elif name in TRAINER_SUBCOMMANDS:
        load("mnist_lite.training.cli").main(argv, SUBCOMMANDS)
    elif name in SUBCOMMANDS:
        try:
            load(f"mnist_lite.commands.{name}")
            import_module("mnist_lite.commands").run(name, argv[1:])
        except UserError as e:
            fail(str(e))
    else:
        nearest = difflib.get_close_matches(name or "", SUBCOMMANDS, n=1)
        hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
        problem = f"unknown subcommand {name!r}.{hint}" if name else "choose a subcommand."
        print(f"{usage()}\n\nmnist-lite: error: {problem}", file=sys.stderr)
        sys.exit(2)
