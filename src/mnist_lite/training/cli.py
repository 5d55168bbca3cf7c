"""fit, validate, test and predict: LightningCLI over the classifier and the MNIST DataModule, extended only where
LightningCLI documents it (its hooks, ``parse_arguments``, ``instantiate_trainer``, the parser and its kwargs)."""

import logging
import os
import re
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import Namespace, set_parsing_settings
from jsonargparse.typing import PositiveInt
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import disable_possible_user_warnings
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import ModelSummary

from mnist_lite import __version__
from mnist_lite.boundaries import checkpoints, config_limits, network_spec
from mnist_lite.boundaries import run_folders as runs
from mnist_lite.errors import UserError, fail
from mnist_lite.training.callbacks import CSVPredictionWriter, EvaluationReport, KeepOnStop, Requeued, RequeueOnSignal
from mnist_lite.training.callbacks.requeue import complete_srun_environment
from mnist_lite.training.checkpoint_io import SafeCheckpointIO
from mnist_lite.training.datamodule import MNISTDataModule
from mnist_lite.training.loggers import RunLogger
from mnist_lite.training.module import MNISTClassifier
from mnist_lite.training.parser import DENIED_IMPORT_PATHS, DigitTrainer, Parser, ShortHelp

# Lightning's bar redraws after every step; every 20 still looks live (benchmarks/progress_bar.py).
PROGRESS_REFRESH_STEPS = 20
# One thread per process: a run's numbers do not depend on the machine's load (benchmarks/threads.py).
THREADS = 1


class MnistLiteCLI(LightningCLI):
    config: Namespace
    checkpoint: tuple[Path, dict[str, Any]] | None = None  # --ckpt_path, read and checked once

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--threads", type=PositiveInt, default=THREADS, help="torch's CPU threads per process.")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(CSVPredictionWriter, "predictions")
        parser.add_lightning_class_args(EvaluationReport, "report")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}-{val_acc:.4f}",
                "trainer.max_epochs": 1,  # Lightning's 1000 is no default for a one-epoch recipe
                "trainer.enable_model_summary": False,  # one line of parameter counts instead (before_fit)
                "trainer.plugins": [{"class_path": "mnist_lite.training.checkpoint_io.SafeCheckpointIO"}],
                "trainer.logger": {"class_path": "mnist_lite.training.loggers.RunLogger"},
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Then ``--ckpt_path`` is read once, strictly, and only its network taken, for an evaluation. It is hidden
        from Lightning, whose parser would import what its hyperparameters name (tests/test_trust.py)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        given = self.config[subcommand].get("ckpt_path") if subcommand else None
        if given is None:
            if subcommand not in (None, "fit"):
                raise UserError(
                    f"{subcommand} needs --ckpt_path: a checkpoint file, 'last' or 'best' (mnist-lite runs lists them)."
                )
            return
        if subcommand == "fit" and given == "best":
            raise UserError("fit --ckpt_path best: fit resumes a run, from 'last' or a checkpoint file.")
        path = runs.resolve_checkpoint(given, _log_root(self.config[subcommand]))
        checkpoint = checkpoints.read(path)
        net = self.config[subcommand].model.get("net")
        spec = net.as_dict() if isinstance(net, Namespace) else None
        if subcommand != "fit":  # an evaluation rebuilds the checkpoint's network; a resumed fit keeps the config's
            spec = network_spec.network_spec(checkpoint, path, [spec["class_path"]] if spec else []) or spec
        network_spec.check_network(spec, checkpoint, path)  # before the parser, whose errors blame the command line
        if subcommand != "fit" and spec is not None:
            self.config = self.parser.parse_object({subcommand: {"model": {"net": spec}}}, self.config)
        self.config[subcommand].ckpt_path = None
        checkpoints.announce(path, checkpoint)
        self.checkpoint = (path, checkpoint)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.checkpoint is not None:
            config.ckpt_path = str(self.checkpoint[0])
        torch.set_num_threads(config.threads)
        # Lightning's DDP launchers set cores // local processes unless OMP_NUM_THREADS is set: two torchrun nodes
        # on one 2-core host then ran two threads each, and spent a third of their CPU spinning in OpenMP's barrier.
        os.environ["OMP_NUM_THREADS"] = str(config.threads)
        _check_builds(config.model)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        callbacks = [*(trainer.get("callbacks") or []), RequeueOnSignal()]
        given = [*callbacks, *(self.trainer_defaults.get("callbacks") or [])]  # Lightning appends the defaults'
        if trainer.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS))
        return super().instantiate_trainer(**kwargs, callbacks=callbacks)

    def after_instantiate_classes(self) -> None:
        if self.subcommand is None:
            return
        if self.subcommand != "fit" and isinstance(self.trainer.logger, RunLogger):
            path = self.checkpoint[0] if self.checkpoint else None
            self.trainer.logger.evaluate(path and runs.run_of(path), self.subcommand)
        io = self.trainer.strategy.checkpoint_io
        if self.checkpoint is not None and isinstance(io, SafeCheckpointIO):
            path, checkpoint = self.checkpoint
            if self.subcommand != "fit":  # an evaluation takes the weights, never the state of the callbacks
                checkpoint = {key: value for key, value in checkpoint.items() if key != "callbacks"}
            io.preloaded = (path, checkpoint)

    def before_fit(self) -> None:
        if self.trainer.is_global_zero:
            counted = ModelSummary(self.model, max_depth=0)
            trainable = f"{counted.trainable_parameters:,} trainable"
            print(f"{type(self.model.net).__name__}: {counted.total_parameters:,} parameters, {trainable}", flush=True)

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if not self.trainer.is_global_zero or callback is None:
            return
        if callback.best_model_path and callback.best_model_score is not None:
            print(f"Best checkpoint ({callback.monitor}={callback.best_model_score:.4f}): {callback.best_model_path}")
        if callback.last_model_path:
            print(f"Last checkpoint: {callback.last_model_path}")
        if self.checkpoint is not None and self.trainer.global_step == self.checkpoint[1].get("global_step"):
            print(
                f"Nothing left to train: {self.checkpoint[0]} had finished its {self.trainer.max_epochs} epoch(s). "
                "Raise --trainer.max_epochs to go on (a one-cycle schedule cannot be extended: start a new fit)."
            )

    def after_test(self) -> None:
        report = next(c for c in self.trainer.callbacks if isinstance(c, EvaluationReport))
        if self.trainer.is_global_zero and report.written:
            print(f"Wrote {', '.join(map(str, report.written))}")

    def after_predict(self) -> None:
        writer = next(c for c in self.trainer.callbacks if isinstance(c, CSVPredictionWriter))
        if writer.read == 0:
            first = "".join(f" (the first, {name}: {why})" for name, why in writer.failures[:1])
            raise UserError(f"none of the {writer.failed} inputs could be read{first}; {writer.path} lists each.")
        if self.trainer.is_global_zero:
            print(writer.summary())


def _check_builds(model: Namespace) -> None:
    """jsonargparse accepts any callable for an optimizer or a schedule and calls it; one that builds something else
    would leave the model with nothing and train with the default instead. Say so before anything runs."""
    bases: dict[str, type | tuple[type, ...]] = {
        "optimizer": torch.optim.Optimizer,
        "scheduler": (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
    }
    for key, base in bases.items():
        spec = model.get(key)
        if not isinstance(spec, Namespace):
            continue
        module, _, name = spec.class_path.rpartition(".")
        found = getattr(sys.modules.get(module), name, None)  # imported by the parser already
        if not (isinstance(found, type) and issubclass(found, base)):
            kind = "an optimizer (torch.optim.*)" if key == "optimizer" else "a schedule (torch.optim.lr_scheduler.*)"
            raise UserError(f"model.{key}.class_path {spec.class_path} is not {kind}: name the class to build.")


def _log_root(config: Namespace) -> Path:
    logger = config.get("trainer", {}).get("logger")
    init = logger.get("init_args") if isinstance(logger, Namespace) else None
    init = init if isinstance(init, Namespace) else Namespace()
    return Path(init.get("save_dir") or runs.LOG_ROOT) / (init.get("name") or "")


def build(
    args: list[str],
    run: bool = True,
    callbacks: list[Callback] | None = None,
    exit_on_error: bool = True,
    summaries: dict[str, str] | None = None,
) -> MnistLiteCLI:
    """The LightningCLI behind fit, validate, test and predict; ``run=False`` only builds the trainer, model and
    data (no subcommand in ``args``). ``callbacks`` are added to the Trainer's (the sweep's); with
    ``exit_on_error=False`` a bad argument raises ``argparse.ArgumentError``; ``summaries`` go in --help."""
    quiet()
    config_limits.install()
    set_parsing_settings(import_path_denylist=DENIED_IMPORT_PATHS)  # also turns jsonargparse's policy on
    header = [f"mnist-lite {shlex.join(args)}"[:10_000]] if run else []  # a run's config.yaml: what made it
    header.append(f"mnist-lite=={__version__}")
    common = {"exit_on_error": exit_on_error, "dump_header": header, "formatter_class": ShortHelp}
    cli_class = _cli_class(args[0] if args else None)
    usage = "mnist-lite {} [--config FILE] [--KEY VALUE ...]"
    per_subcommand = {
        name: {**common, "description": (summaries or {}).get(name), "usage": usage.format(name)}
        for name in cli_class.subcommands()
    }
    return cli_class(
        MNISTClassifier,
        MNISTDataModule,
        trainer_class=DigitTrainer,
        parser_class=Parser,
        seed_everything_default=0,
        auto_configure_optimizers=False,  # the model's own optimizer/scheduler options cover it
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": callbacks} if callbacks else None,
        parser_kwargs={"prog": "mnist-lite", **common, **per_subcommand},
        args=None if args == sys.argv[1:] else args,  # None: LightningCLI reads the command line (it warns if both)
        run=run,
    )


def _cli_class(subcommand: str | None) -> type[MnistLiteCLI]:
    """LightningCLI builds a parser for each subcommand it lists, and a command runs one: list only the one named."""
    every = LightningCLI.subcommands()
    if subcommand is None or subcommand not in every:
        return MnistLiteCLI
    named = {subcommand: every[subcommand]}

    class OneSubcommand(MnistLiteCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            return named

    return OneSubcommand


def quiet() -> None:
    """Lightning's console lines through its documented switches: its INFO log (the accelerators, an advert, the
    seed) and its hints (``PossibleUserWarning``) are noise for this command; its warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    disable_possible_user_warnings()
    warnings.filterwarnings("ignore", category=FutureWarning, module="lightning")  # torch's, on Lightning's own code
    # A resumed fit writes into a run folder of its own, by design (the filter Lightning's docs show for its own).
    warnings.filterwarnings("ignore", "The dirpath has changed from", UserWarning, "lightning")


def main(args: list[str], summaries: dict[str, str]) -> None:
    """``mnist-lite fit|validate|test|predict ARGS``: bad input is a line on stderr and a non-zero exit."""
    keeper = KeepOnStop()
    try:
        complete_srun_environment()
        build(args, summaries=summaries, callbacks=[keeper])
    except UserError as e:
        fail(str(e))
    except MisconfigurationException as e:  # Lightning's word for a setting that cannot work here
        fail(_misconfiguration(str(e)))
    except ValueError as e:  # jsonargparse's report of a class whose constructor failed, union by union
        problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", str(e))
        if problem is None:
            raise
        class_path, reason = problem.groups()
        hint = " Install it: pip install -e '.[tensorboard]'." if "tensorboard" in reason else ""
        fail(f"cannot build {class_path}: {reason.strip()}{hint}")
    except Requeued:  # the callback has said what was saved; the requeued job resumes from it
        pass
    except SIGTERMException:  # Lightning stops after the step in progress (SIGTERM, or Ctrl-C: KeepOnStop)
        _stopped(args, keeper)
    except SystemExit:  # Lightning's answer to a Ctrl-C before training, which KeepOnStop has seen
        if keeper.signal is None:
            raise
        _stopped(args, keeper)
    finally:
        keeper.restore()


def _stopped(args: list[str], keeper: KeepOnStop) -> NoReturn:
    """One line: what stopped the command, and for a fit, the command that resumes it; then the shell's code."""
    stop = keeper.signal or signal.SIGTERM
    if stop == signal.SIGINT:  # Lightning's teardown put Python's handler back: a second Ctrl-C ends it at once
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    name = "Ctrl-C" if stop == signal.SIGINT else stop.name
    if keeper.saved is not None:
        again = [a for a, b in zip(args, ["", *args]) if not a.startswith("--ckpt_path") and b != "--ckpt_path"]
        command = shlex.join(["mnist-lite", *again, "--ckpt_path", str(keeper.saved)])
        hint = f"saved step {keeper.step}; resume with: {command}"
    elif args[0] == "fit":
        hint = "resume with the same command and --ckpt_path last" if keeper.step else "nothing was trained yet"
    else:
        hint = "what was written is kept"
    print(f"mnist-lite: stopped by {name}; {hint}", file=sys.stderr)
    sys.exit(128 + stop)


def _misconfiguration(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "invalid trainer setting"
    if "gpu" in first.lower() or "cuda" in first.lower():
        return f"{first} This machine has no usable GPU: pass --trainer.accelerator=cpu, or leave out configs/gpu.yaml."
    return first
