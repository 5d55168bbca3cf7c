"""The ``mnist-lite`` command: LightningCLI over the classifier and the MNIST DataModule."""

import csv
import signal
import sys
from pathlib import Path
from typing import NoReturn

from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lite import __version__, checkpoints, data_source, figures
from mnist_lite.augmentations import REGISTRY
from mnist_lite.classifier import MNISTClassifier
from mnist_lite.datamodule import MNISTDataModule, to_unit_range
from mnist_lite.errors import UserError
from mnist_lite.export import FORMATS, export
from mnist_lite.prediction_writer import CSVPredictionWriter
from mnist_lite.test_report import TestReport

DESCRIPTION = (
    "Train and use a compact MNIST CNN. Trainer subcommands: fit, validate, test, predict. "
    "Also: 'mnist-lite augment' draws the nine augmentations, 'mnist-lite export' writes a fitted network as ONNX, "
    "TorchScript or a state_dict, and 'mnist-lite curves' plots a run's learning curves (each takes --help)."
)

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
        parser.add_lightning_class_args(CSVPredictionWriter, "predictions")
        parser.add_lightning_class_args(TestReport, "test_report")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}-{val_acc:.4f}",
                "trainer.plugins": [{"class_path": "mnist_lite.checkpoints.AtomicCheckpointIO"}],
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": "lightning_logs", "name": ""},
                },
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand or "", {})
        ckpt_path = config.get("ckpt_path")
        if subcommand == "fit" and ckpt_path == "last":
            # Lightning looks for "last" in this run's own, new, version folder; resume the newest run instead.
            ckpt_path = config["ckpt_path"] = str(_newest_last_checkpoint(_log_root(config)))
            print(f"Resuming from {ckpt_path}; this run logs to a new version folder.")
        # Read the checkpoint once, safely, before Lightning or the CLI touch it.
        self.checkpoint = None
        if ckpt_path and ckpt_path not in SPECIAL_CKPT_PATHS:
            self.checkpoint = checkpoints.read(ckpt_path)
            self.checkpoint_path = ckpt_path

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "predict" and not self.config.predict.get("ckpt_path"):
            raise UserError("predict needs --ckpt_path: the checkpoint of a model fitted with 'mnist-lite fit'.")

    def after_instantiate_classes(self) -> None:
        if self.checkpoint is not None:
            checkpoints.check_fits(self.model, self.checkpoint, self.checkpoint_path)

    def after_predict(self) -> None:
        writer = next(c for c in self.trainer.callbacks if isinstance(c, CSVPredictionWriter))
        if writer.read == 0:
            raise UserError(f"none of the {writer.failed} inputs could be read; {writer.path} lists why.")

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and callback.best_model_path:
            print(f"Best checkpoint ({callback.monitor}={callback.best_model_score:.4f}): {callback.best_model_path}")
        if self.trainer.is_global_zero and callback.last_model_path:
            print(f"Last checkpoint: {callback.last_model_path}")


def _log_root(config) -> Path:
    logger = config.get("trainer", {}).get("logger")
    init_args = logger.get("init_args", {}) if isinstance(logger, dict) else {}
    return Path(init_args.get("save_dir") or "lightning_logs")


def _newest_last_checkpoint(root: Path) -> Path:
    found = [p for p in root.glob("*/checkpoints/last*.ckpt") if p.is_file()]
    if not found:
        raise UserError(f"--ckpt_path last: no last.ckpt under {root}/*/checkpoints to resume from.")
    return max(found, key=lambda p: p.stat().st_mtime)


def augment(args: list[str]) -> None:
    """``mnist-lite augment``: draw the augmentations of one training image into a PNG."""
    parser = ConciseParser(prog="mnist-lite augment", description=augment.__doc__.split(": ", 1)[1])
    parser.add_argument("--index", type=NonNegativeInt, default=0, help="which training image (0-59999)")
    parser.add_argument("--output", default="augmentations.png", help="the PNG to write")
    parser.add_argument("--names", type=list[str], default=list(REGISTRY), help="augmentations to draw, by name")
    parser.add_argument("--random", action="store_true", help="draw the random training-time versions instead")
    parser.add_argument("--samples", type=PositiveInt, default=4, help="with --random: draws per augmentation")
    parser.add_argument("--seed", type=int, default=0, help="with --random: the seed of the draws")
    parser.add_argument("--data_dir", default="data", help="where MNIST is extracted")
    cfg = parser.parse_args(args)
    unknown = [name for name in cfg.names if name not in REGISTRY]
    if unknown:
        raise UserError(f"unknown augmentation {unknown[0]!r}: choose from {', '.join(REGISTRY)}.")
    data_source.prepare(cfg.data_dir)
    images, labels = data_source.load(cfg.data_dir, train=True)
    if cfg.index >= len(labels):
        raise UserError(f"--index {cfg.index} is out of range: the training set has images 0-{len(labels) - 1}.")
    image, label = to_unit_range(images[cfg.index : cfg.index + 1])[0], int(labels[cfg.index])
    if cfg.random:
        fig = figures.random_augmentation_grid(image, label, cfg.index, cfg.names, cfg.samples, cfg.seed)
    else:
        fig = figures.augmentation_grid(image, label, cfg.index, cfg.names)
    print(f"Wrote {figures.save(fig, cfg.output)}")


def cli(args: list[str] | None, run: bool = True) -> MnistLiteCLI:
    """The LightningCLI behind ``mnist-lite``; ``run=False`` only builds the trainer, model and data (no subcommand)."""
    return MnistLiteCLI(
        MNISTClassifier,
        MNISTDataModule,
        parser_class=ConciseParser,
        seed_everything_default=0,
        auto_configure_optimizers=False,  # the model's own optimizer/scheduler options cover it
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"version": __version__, "prog": "mnist-lite", "description": DESCRIPTION},
        args=args,
        run=run,
    )


def export_command(args: list[str]) -> None:
    """``mnist-lite export``: write a fitted network as ONNX, TorchScript or a plain state_dict."""
    parser = ConciseParser(prog="mnist-lite export", description=export_command.__doc__.split(": ", 1)[1])
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by mnist-lite fit")
    parser.add_argument("--format", choices=list(FORMATS), default="onnx", help="what to write")
    parser.add_argument("--output", required=True, help="the file to write")
    cfg = parser.parse_args(args)
    print(f"Wrote {export(cfg.ckpt_path, cfg.format, cfg.output)}")


def curves(args: list[str]) -> None:
    """``mnist-lite curves``: plot a run's loss and accuracy against the step, from its metrics.csv."""
    parser = ConciseParser(prog="mnist-lite curves", description=curves.__doc__.split(": ", 1)[1])
    parser.add_argument("--log_dir", required=True, help="a run folder, e.g. lightning_logs/version_0")
    parser.add_argument("--output", default=None, help="the PNG to write (default: <log_dir>/learning_curves.png)")
    cfg = parser.parse_args(args)
    metrics = Path(cfg.log_dir) / "metrics.csv"
    if not metrics.is_file():
        raise UserError(f"{metrics} does not exist: pass the folder of a run logged with the CSV logger.")
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    output = cfg.output or Path(cfg.log_dir) / "learning_curves.png"
    print(f"Wrote {figures.save(figures.learning_curves(rows), output)}")


# Commands beside LightningCLI's trainer subcommands, which only run Trainer methods.
TOOLS = {"augment": augment, "export": export_command, "curves": curves}


def main(args: list[str] | None = None) -> None:
    """Run ``mnist-lite`` with ``args`` (default: the command line)."""
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in TOOLS:
            TOOLS[argv[0]](argv[1:])
            return
        cli(args)  # None: LightningCLI reads sys.argv itself
    except UserError as e:
        print(f"mnist-lite: error: {e}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:  # Lightning stops at the next batch; the last saved checkpoint resumes it
        print("mnist-lite: stopped by SIGTERM; continue with the same command and --ckpt_path last.", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
