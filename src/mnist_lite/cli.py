"""The ``mnist-lite`` command: LightningCLI over the classifier and the MNIST DataModule."""

import sys
from typing import NoReturn

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mnist_lite import __version__, checkpoints
from mnist_lite.classifier import MNISTClassifier
from mnist_lite.datamodule import MNISTDataModule
from mnist_lite.errors import UserError

# Values Lightning resolves itself for `fit --ckpt_path`.
SPECIAL_CKPT_PATHS = {"last", "best", "hpc", "registry"}


class ConciseParser(LightningArgumentParser):
    """Reports a bad option or config value in two lines, not jsonargparse's full usage listing."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {message.strip()}\nSee '{prog} --help' for the accepted options.\n")
        sys.exit(2)


class MnistLiteCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}-{val_acc:.4f}",
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": "lightning_logs", "name": ""},
                },
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # Read the checkpoint once, safely, before Lightning or the CLI touch it.
        ckpt_path = self.config.get(self.config.get("subcommand") or "", {}).get("ckpt_path")
        self.checkpoint = None
        if ckpt_path and ckpt_path not in SPECIAL_CKPT_PATHS:
            self.checkpoint = checkpoints.read(ckpt_path)
            self.checkpoint_path = ckpt_path

    def after_instantiate_classes(self) -> None:
        if self.checkpoint is not None:
            checkpoints.check_fits(self.model, self.checkpoint, self.checkpoint_path)

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and callback.best_model_path:
            print(f"Best checkpoint ({callback.monitor}={callback.best_model_score:.4f}): {callback.best_model_path}")
        if self.trainer.is_global_zero and callback.last_model_path:
            print(f"Last checkpoint: {callback.last_model_path}")


def main(args: list[str] | None = None) -> None:
    """Run ``mnist-lite`` with ``args`` (default: the command line)."""
    try:
        MnistLiteCLI(
            MNISTClassifier,
            MNISTDataModule,
            parser_class=ConciseParser,
            seed_everything_default=0,
            auto_configure_optimizers=False,  # the model's own optimizer/scheduler options cover it
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"version": __version__, "prog": "mnist-lite"},
            args=args,
        )
    except UserError as e:
        print(f"mnist-lite: error: {e}", file=sys.stderr)
        sys.exit(1)
