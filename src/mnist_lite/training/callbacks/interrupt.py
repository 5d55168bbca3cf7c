"""Ctrl-C during fit keeps the work: the step in progress ends, a checkpoint of it is saved, and training/cli.py
prints the command that resumes it."""

import signal
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class KeepOnStop(Callback):
    """The first Ctrl-C takes SIGTERM's path (Lightning ends the step in progress); then, for either signal,
    ``interrupted.ckpt`` is saved beside the run's checkpoints. A second Ctrl-C stops at once; other errors save
    nothing. Lightning's ``OnExceptionCheckpoint`` would make every fit without ``--ckpt_path`` resume from "last"."""

    FILENAME = "interrupted.ckpt"

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None  # what stopped the run, if a signal did
        self.saved: Path | None = None
        self.step: int | None = None  # the step a signal stopped training at
        self._previous: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Here, not in setup: Lightning sets its SIGTERM handler after the setup hooks.
        self._previous = signal.signal(signal.SIGINT, self._interrupt)

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the second Ctrl-C ends the process where it is
        sigterm = signal.getsignal(signal.SIGTERM)
        if not callable(sigterm):
            raise KeyboardInterrupt
        sigterm(signum, frame)  # Lightning's: stop after this step, on every process

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # a Ctrl-C before training started: nothing to keep
            self.signal = signal.SIGINT
        if not isinstance(exception, SIGTERMException):
            return
        self.signal = self.signal or signal.SIGTERM
        self.step = trainer.global_step
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or trainer.global_step == 0:
            return
        folder = getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        path = Path(folder) / self.FILENAME
        trainer.save_checkpoint(path, weights_only=False)
        self.saved = path

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.restore()

    def restore(self) -> None:
        """Ctrl-C as it was before training, unless one was taken: then a second still ends the process at once."""
        if self._previous is not None and self.signal != signal.SIGINT:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
