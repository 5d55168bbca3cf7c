"""The ``mnist-lite`` command: LightningCLI over the classifier and the MNIST DataModule, and the tools beside it."""

import importlib
import inspect
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import torch
from jsonargparse import Namespace, set_parsing_settings
from jsonargparse.typing import PositiveInt
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lite import __version__, checkpoints, config_limits, cpu_threads, quiet, runs
from mnist_lite.callbacks import CSVPredictionWriter, EvaluationReport
from mnist_lite.classifier import MNISTClassifier
from mnist_lite.commands import TOOLS, add_arguments, tool
from mnist_lite.datamodule import MNISTDataModule
from mnist_lite.errors import UserError

DESCRIPTION = "Train and use a compact MNIST CNN, configured by YAML. Each subcommand takes --help."

# Import paths no config value may name, added to jsonargparse's own denylist (os, subprocess, builtins.exec, ...):
# the loaders that would turn a file into code.
DENIED_IMPORT_PATHS = [
    "torch.hub",
    "torch.load",
    "torch.jit.load",
    "torch.package",
    "torch.utils.cpp_extension",
    "numpy.load",
    "lightning.pytorch.core.saving",
]
CLASS_KEYS = ("net", "optimizer", "scheduler")
# Lightning's bar redraws after every step: 0.18 ms of each 6-12 ms step here. Every 20 steps (several redraws a
# second) it costs 0.02 ms and still looks live (benchmarks/progress_bar.py). A bar in trainer.callbacks overrides it.
PROGRESS_REFRESH_STEPS = 20
SUBCOMMANDS = [*LightningCLI.subcommands(), *TOOLS]


class ConciseParser(LightningArgumentParser):
    """Reports a bad option or config value in two lines, not jsonargparse's full usage listing; takes no prefixes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --trainer.max_epoch is a typo, not max_epochs
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {concise(message)}\nSee '{prog} --help' for the accepted options.\n")
        sys.exit(2)


def concise(message: str) -> str:
    """jsonargparse explains a value that fits no type of a union by listing every type's complaint; the line
    that says what is wrong with the class the user chose is the one to show."""
    if message.startswith('expected "subcommand"'):  # jsonargparse cuts its list of choices short
        return f"choose a subcommand: {', '.join(SUBCOMMANDS)}."
    key_match = re.search(r'key "([^"]+)"', message)
    key = f"{key_match.group(1)}: " if key_match else ""
    denied = re.search(r"Importing '([^']+)' is not allowed, denied by the '([^']+)' entry", message)
    if denied:
        path, entry = denied.groups()
        return f"{key}importing {path!r} is not allowed (the {entry!r} entry of the import-path denylist)."
    callable_problem = re.search(
        r"expects a function or a callable class: (.+?)\.* Got value: .*?class_path='([^']+)'", message
    )
    if callable_problem:
        reason, class_path = callable_problem.groups()
        return f"{key}{reason} by {class_path}: its init_args must be parameters of that class (see the README)."
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    specific = [
        line
        for line in lines
        if "does not accept" in line
        or "is not expected" in line
        or "Problem with given class_path" in line
        or "not allowed" in line
        or "has no attribute" in line
    ]
    return f"{lines[0]} {specific[-1] if specific else lines[-1]}"


class MnistLiteCLI(LightningCLI):
    config: Namespace
    checkpoint: dict[str, Any] | None = None
    checkpoint_path: Path | None = None
    run_dir: Path | None = None
    _logger_as_given: tuple[Namespace, str, str] | None = None  # the logger settings as given, restored after use
    teacher: MNISTClassifier | None = None  # fit's distillation teacher, read before anything is written

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        first = argv[0] if isinstance(argv, list) and argv else None
        self._named: str | None = first if first in SUBCOMMANDS else None
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            if self.run_dir is not None and not runs.is_other_rank():
                runs.release(self.run_dir)  # a command that fails before its work leaves nothing behind
            raise

    # Only the named subcommand's parser is built: all nine took 0.34 s of every command's start, one takes 0.15
    # (benchmarks/startup.py). All are built when none is named (--help, a typo), so the listing stays whole.
    def subcommands(self) -> dict[str, set[str]]:  # Lightning's is a staticmethod; the instance knows the name
        every = LightningCLI.subcommands()
        return every if self._named is None else {k: v for k, v in every.items() if k == self._named}

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        for name in TOOLS:
            if self._named not in (None, name):
                continue
            function = tool(name)
            summary = (inspect.getdoc(function) or name).split("\n")[0]
            tool_parser = ConciseParser(prog=f"mnist-lite {name}", description=summary)
            add_arguments(tool_parser, function)
            parser._subcommands_action.add_subcommand(name, tool_parser, help=summary)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--threads",
            type=PositiveInt | None,
            default=None,
            help="torch's CPU threads; by default the cores free at start, shared by this command's processes.",
        )
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
                "trainer.plugins": [{"class_path": "mnist_lite.checkpoints.SafeCheckpointIO"}],
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": "lightning_logs", "name": ""},
                },
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand is None or subcommand in TOOLS:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in ("last", "best"):
            if subcommand == "fit" and ckpt_path == "best":
                raise UserError("fit --ckpt_path best: fit resumes a run, from last or a checkpoint file.")
            ckpt_path = config["ckpt_path"] = str(runs.newest_checkpoint(_log_root(config), ckpt_path))
        if ckpt_path:
            print(f"Checkpoint: {ckpt_path}")
            if subcommand != "fit":
                quiet.evaluation()
            # Read once, safely; SafeCheckpointIO hands these same bytes to the Trainer's restore.
            self.checkpoint_path = Path(ckpt_path)
            self.checkpoint = checkpoints.read(ckpt_path)
        elif subcommand == "predict":
            raise UserError("predict needs --ckpt_path: a checkpoint file, or last or best for the newest run's.")

    def _parse_ckpt_path(self) -> None:
        """Lightning's version merges the checkpoint's hyperparameters into the config as they are, and jsonargparse
        then imports whatever they name. Here they are checked against the allow-list first."""
        if self.checkpoint is None or self.checkpoint_path is None:
            return
        subcommand = self.config.subcommand
        model = self.config[subcommand].model
        trusted = {spec.class_path for key in CLASS_KEYS if isinstance(spec := model.get(key), Namespace)}
        hparams = checkpoints.allowed_hyperparameters(self.checkpoint, self.checkpoint_path, trusted)
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        net = self.config[subcommand].model.get("net")
        checkpoints.check_shapes(
            net.as_dict() if isinstance(net, Namespace) else None, self.checkpoint, self.checkpoint_path
        )

    def _set_seed(self) -> None:
        if self.config.get("subcommand") not in TOOLS:
            super()._set_seed()

    def before_instantiate_classes(self) -> None:
        if self.subcommand in TOOLS:
            return
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_num_threads(config.threads or cpu_threads.choose(_processes_here(config.trainer)))
        _check_builds(config.model)
        if self.subcommand in (None, "fit") and config.model.get("teacher"):
            try:
                self.teacher = checkpoints.load_model(config.model.teacher)
            except UserError as e:
                raise UserError(f"model.teacher: {e}") from None
        if self.subcommand:
            self._claim_run_dir()

    def _claim_run_dir(self) -> None:
        """Give this command its own folder (runs.py) by pinning the logger's version to one claimed for it."""
        logger = self.config[self.subcommand].trainer.get("logger")
        init = logger.get("init_args") if isinstance(logger, Namespace) else None
        if not isinstance(init, Namespace) or "version" not in init or init.version is not None:
            return  # no logger, another kind, or a version the user chose
        if self.config[self.subcommand].trainer.get("fast_dev_run"):
            return  # Lightning logs nothing then
        if runs.is_other_rank():
            if runs.RUN_DIR_ENV not in os.environ:
                return
            folder = Path(os.environ[runs.RUN_DIR_ENV])
        else:
            root = Path(init.save_dir or "lightning_logs") / (init.get("name") or "")
            if self.subcommand == "fit":
                folder = runs.claim(root, "version", numbered=True)
            else:
                parent = runs.evaluation_parent(self.checkpoint_path, root)
                folder = runs.claim(parent, self.subcommand, numbered=False)
            os.environ[runs.RUN_DIR_ENV] = str(folder)
            print(f"Run folder: {folder}")
        self.run_dir = folder
        self._logger_as_given = (init, init.save_dir, init.name)
        # An int N names "version_N" and shows as v_num N on the progress bar; a str names the folder itself.
        number = folder.name.removeprefix("version_")
        version = int(number) if number.isdigit() else folder.name
        init.save_dir, init.name, init.version = str(folder.parent), "", version

    def instantiate_classes(self) -> None:
        if self.subcommand in TOOLS:
            return
        try:
            super().instantiate_classes()
        except ValueError as e:  # jsonargparse's report of a class whose constructor failed, union by union
            problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", str(e))
            if problem is None:
                raise
            class_path, reason = problem.groups()
            hint = " Install it: pip install -e '.[tensorboard]'." if "tensorboard" in reason else ""
            raise UserError(f"cannot build {class_path}: {reason.strip()}{hint}") from None

    def after_instantiate_classes(self) -> None:
        if self._logger_as_given:  # the saved config.yaml must start a new run when reused
            given, save_dir, name = self._logger_as_given
            given.save_dir, given.name, given.version = save_dir, name, None
        if self.teacher is not None:
            self.model.attach_teacher(self.teacher)
        io = getattr(self, "trainer", None) and self.trainer.strategy.checkpoint_io
        if self.checkpoint_path and self.checkpoint is not None and isinstance(io, checkpoints.SafeCheckpointIO):
            io.preloaded = (self.checkpoint_path, self.checkpoint)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        given = [*(config.get("callbacks") or []), *callbacks, *(self.trainer_defaults.get("callbacks") or [])]
        if config.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, TQDMProgressBar(refresh_rate=PROGRESS_REFRESH_STEPS)]
        return super()._instantiate_trainer(config, callbacks)

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand in TOOLS:
            function = tool(subcommand)
            options = self.config[subcommand]
            function(**{name: options[name] for name in inspect.signature(function).parameters})
        else:
            super()._run_subcommand(subcommand)

    def before_fit(self) -> None:
        if self.trainer.is_global_zero:
            params = sum(p.numel() for p in self.model.parameters())
            trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            print(f"{type(self.model.net).__name__}: {params:,} parameters, {trainable:,} trainable")

    def after_predict(self) -> None:
        writer = next(c for c in self.trainer.callbacks if isinstance(c, CSVPredictionWriter))
        if writer.read == 0:
            raise UserError(f"none of the {writer.failed} inputs could be read; {writer.path} lists why.")
        if self.trainer.is_global_zero:
            print(writer.summary())

    def after_test(self) -> None:
        report = next(c for c in self.trainer.callbacks if isinstance(c, EvaluationReport))
        if self.trainer.is_global_zero and report.written:
            print(f"Wrote {', '.join(map(str, report.written))}")

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if not self.trainer.is_global_zero or callback is None:
            return
        if callback.best_model_path and callback.best_model_score is not None:
            print(f"Best checkpoint ({callback.monitor}={callback.best_model_score:.4f}): {callback.best_model_path}")
        if callback.last_model_path:
            print(f"Last checkpoint: {callback.last_model_path}")
        if self.checkpoint is not None and self.trainer.global_step == self.checkpoint.get("global_step"):
            print(
                f"Nothing left to train: {self.checkpoint_path} had finished its {self.trainer.max_epochs} epoch(s). "
                "Raise --trainer.max_epochs to go on (a one-cycle schedule cannot be extended: start a new fit)."
            )


def _processes_here(trainer: Namespace) -> int:
    """How many processes this command runs on this machine: DDP on the CPU runs one per device."""
    devices = trainer.get("devices")
    return devices if trainer.get("accelerator") == "cpu" and isinstance(devices, int) else 1


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
        found = getattr(importlib.import_module(module), name, None)  # already imported by the parser
        if not (inspect.isclass(found) and issubclass(found, base)):
            kind = "an optimizer (torch.optim.*)" if key == "optimizer" else "a schedule (torch.optim.lr_scheduler.*)"
            raise UserError(f"model.{key}.class_path {spec.class_path} is not {kind}: name the class to build.")


def _log_root(config: Namespace) -> Path:
    logger = config.get("trainer", {}).get("logger")
    init = logger.get("init_args") if isinstance(logger, Namespace) else None
    if not isinstance(init, Namespace):
        return Path("lightning_logs")
    return Path(init.get("save_dir") or "lightning_logs") / (init.get("name") or "")


def cli(
    args: list[str] | None, run: bool = True, callbacks: list[Callback] | None = None, exit_on_error: bool = True
) -> MnistLiteCLI:
    """The LightningCLI behind ``mnist-lite``; ``run=False`` only builds the trainer, model and data (no subcommand).
    ``callbacks`` are added to the Trainer's (sweep's pruning); ``exit_on_error=False`` makes a bad argument raise
    ``argparse.ArgumentError`` instead of exiting."""
    config_limits.install()
    set_parsing_settings(import_path_denylist=DENIED_IMPORT_PATHS)  # also turns jsonargparse's policy on
    parser_kwargs = {"version": __version__, "prog": "mnist-lite", "description": DESCRIPTION}
    return MnistLiteCLI(
        MNISTClassifier,
        MNISTDataModule,
        parser_class=ConciseParser,
        seed_everything_default=0,
        auto_configure_optimizers=False,  # the model's own optimizer/scheduler options cover it
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": callbacks} if callbacks else None,
        parser_kwargs={**parser_kwargs, "exit_on_error": exit_on_error},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run ``mnist-lite`` with ``args`` (default: the command line)."""
    argv = sys.argv[1:] if args is None else list(args)
    quiet.install()
    try:
        cli(args)  # None: LightningCLI reads sys.argv itself
    except UserError as e:
        _fail(str(e))
    except MisconfigurationException as e:  # Lightning's word for a setting that cannot work here
        _fail(_misconfiguration(str(e)))
    except SIGTERMException:  # Lightning stops at the next batch; what was saved or written stays
        command = argv[0] if argv else ""
        hint = "continue with the same command and --ckpt_path last" if command == "fit" else "what was written is kept"
        print(f"mnist-lite: stopped by SIGTERM; {hint}.", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)


def _misconfiguration(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "invalid trainer setting"
    if "gpu" in first.lower() or "cuda" in first.lower():
        return f"{first} This machine has no usable GPU: leave out configs/gpu.yaml, or pass --trainer.accelerator=cpu."
    return first


def _fail(message: str) -> NoReturn:
    print(f"mnist-lite: error: {message}", file=sys.stderr)
    sys.exit(1)
