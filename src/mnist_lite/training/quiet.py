"""Silence the lines other libraries print that are noise for this command, each by its exact message.

Everything else they print still shows: a filter here names one message, never a whole logger or category.
"""

import logging
import warnings

_RANK_ZERO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
# Logged lines (INFO) that say nothing a user of this command needs, by the logger that emits them.
_NOISE = {
    _RANK_ZERO: (
        "💡 Tip: For seamless cloud logging",  # an advertisement
        "GPU available: ",  # the accelerator is in the config; a GPU left unused still gets Lightning's own warning
        "TPU available: ",
        "HPU available: ",
        "Loading `train_dataloader` to estimate number of stepping batches",
        "Restoring states from the checkpoint path at ",  # the CLI has printed "Checkpoint: <path> (...)"
        "Restored all states from the checkpoint at ",
        "Loaded model weights from the checkpoint at ",
        "`Trainer.fit` stopped: `max_",  # the run ends as configured; the CLI prints the checkpoints
        "`Trainer(limit_",  # "...was configured so 1 batch will be used": as the user wrote
        "-" * 100 + "\ndistributed_backend=",  # the process group's banner, under DDP
        "\nDetected KeyboardInterrupt, attempting graceful shutdown",  # the CLI says what Ctrl-C stopped and kept
    ),
    ("lightning.fabric.utilities.seed",): ("Seed set to ",),  # the seed is in the config and config.yaml
    # SLURM's own lines: its requeue is this project's (callbacks/requeue.py), which says what it did
    ("lightning.pytorch.trainer.connectors.signal_connector",): (
        "SLURM auto-requeueing enabled",
        "Received SIGTERM: ",
        "Bypassing SIGTERM: ",
    ),
    ("lightning.fabric.utilities.distributed",): ("Initializing distributed: ",),  # one line per process
}
_WARNINGS = (
    # Lightning's own code trips torch's deprecation of LeafSpec; nothing a user can change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # test/validate/predict restore ModelCheckpoint's state into a new folder by design (runs.py).
    r"The dirpath has changed from .* won't be reloaded",
    # Short runs (a debug fit, the tests) log their epoch figures anyway.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # Installed for SLURM, and not launched by it: a plain run is meant.
    r"The `srun` command is available on your system but is not used",
    # datamodule.EpochShuffler resumes an epoch at its next sample (tests/test_reliability.py, tests/test_slurm.py).
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
)


class _DropNoise(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("[rank: "):  # the same line from another process of a distributed run
            message = message.partition("] ")[2]
        return not message.startswith(self.prefixes)


def install() -> None:
    for names, prefixes in _NOISE.items():
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _DropNoise) for f in logger.filters):
                logger.addFilter(_DropNoise(prefixes))
    for message in _WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def evaluation() -> None:
    """For validate, test and predict: they use a checkpoint's weights (an EMA run's hold the average), never the
    state of the callbacks that wrote it, so Lightning's advice to configure those callbacks again is noise."""
    warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
