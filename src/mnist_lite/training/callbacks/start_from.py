"""A fit that starts from a fitted checkpoint's weights: a new run with its own schedule, unlike ``fit --ckpt_path``,
which resumes the old one (configs/finetune.yaml, docs/own-digits.md)."""

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from mnist_lite.boundaries import checkpoints, run_folders
from mnist_lite.errors import UserError


class StartFrom(Callback):
    """Args:
    weights: the checkpoint whose weights the fit starts from: a ``.ckpt`` file, ``last`` or ``best``. Only its
        weights are taken, read through the same safe reader as every checkpoint; its network must be the one
        the config builds (pass the configs it was fitted with).
    """

    def __init__(self, weights: str) -> None:
        self.weights = weights

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":  # setup runs before a resume's restore, so --ckpt_path still wins
            return
        try:  # last and best are looked up under the run's own log root
            root = getattr(getattr(trainer, "logger", None), "root_dir", None) or run_folders.LOG_ROOT
            path, model = checkpoints.load_given(self.weights, Path(root))
            fitted = model.state_dict()
        except UserError as e:
            raise UserError(f"StartFrom.weights: {e}") from None
        if {k: t.shape for k, t in fitted.items()} != {k: t.shape for k, t in pl_module.state_dict().items()}:
            raise UserError(
                f"StartFrom.weights: {path} holds another network than the config builds: "
                "pass the configs it was fitted with (the first line of its run's config.yaml)."
            )
        pl_module.load_state_dict(fitted)
