"""Silence the lines other libraries print that are noise for this command, each by its exact message.

Everything else they print still shows: a filter here names one message, never a whole logger or category.
"""

import logging
import warnings

# Lightning's rank-zero INFO lines that say nothing a user of this command needs.
_NOISE_PREFIXES = (
    "💡 Tip: For seamless cloud logging",  # an advertisement
    "GPU available: ",  # the accelerator is in the config; a GPU left unused still gets Lightning's own warning
    "TPU available: ",
    "HPU available: ",
    "Loading `train_dataloader` to estimate number of stepping batches",
    "Restoring states from the checkpoint path at ",  # the CLI has printed "Checkpoint: <path>"
    "Loaded model weights from the checkpoint at ",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE_PREFIXES)


def install() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    # Lightning's own code trips torch's deprecation of LeafSpec; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # test/validate/predict restore ModelCheckpoint's state into a new folder by design (runs.py).
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")


def evaluation() -> None:
    """For validate, test and predict: they use a checkpoint's weights (an EMA run's hold the average), never the
    state of the callbacks that wrote it, so Lightning's advice to configure those callbacks again is noise."""
    warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create")
