"""The LightningModule: the plain ``network.Classifier``, trained and evaluated with cross-entropy and torchmetrics
accuracy."""

import functools
import inspect
import math
import warnings
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lite.boundaries.console import shown
from mnist_lite.boundaries.network_spec import check_weights
from mnist_lite.errors import UserError
from mnist_lite.network import Classifier, CompactCNN, DigitNet
from mnist_lite.training import resume

# Cross-entropy over 10 classes starts near ln 10 = 2.3; a loss this large means logits 1e4 apart: diverged. Checked
# here, not by Lightning's EarlyStopping(check_finite=True), which ends such a run with status 0 and its checkpoints.
DIVERGED_LOSS = 1e4


class MNISTClassifier(Classifier, LightningModule):
    """The plain classifier (images in [0, 1] to logits; its forward and its ``net.*`` weights) and its training.

    Args:
        net: the network; ``None`` builds the default ``CompactCNN``.
        optimizer: builds the optimizer from the parameters; ``None`` means the assignment's Adam at lr 1e-3.
        scheduler: builds a per-step LR schedule from the optimizer. If it takes ``total_steps`` (as
            ``OneCycleLR`` does) it is given the run's optimizer-step count, which only the trainer knows.
        label_smoothing: cross-entropy label smoothing in training, in [0, 1).
    """

    # LightningModule's, which mypy sees as Any (Lightning's imports are skipped); undeclared, they would be typed
    # by nn.Module's __getattr__, Classifier's base, which comes first.
    trainer: Any
    global_step: Any
    log: Any
    log_dict: Any
    save_hyperparameters: Any
    train_totals: Tensor

    def __init__(
        self,
        net: DigitNet | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(net if net is not None else CompactCNN())
        with warnings.catch_warnings():
            # Under the CLI these are the parsed config (plain dicts and numbers), never pickled objects; when
            # load_from_checkpoint rebuilds the module from that config, Lightning would warn about `net` needlessly.
            warnings.filterwarnings("ignore", message="Attribute 'net' is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.label_smoothing = label_smoothing
        self._restored: dict[str, Any] | None = None  # the training state of a checkpoint being resumed
        self.metrics = nn.ModuleDict()
        for stage in ("val", "test"):
            self.metrics[f"{stage}_loss"] = MeanMetric(nan_strategy="disable")
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes=10, average="micro", validate_args=False)
        # Training's epoch loss and accuracy as running sums (loss x images, correct, images), summed over the
        # processes at the epoch end: one add a step, cheaper than two torchmetrics updates.
        self.register_buffer("train_totals", torch.zeros(3), persistent=False)

    # Steps only update the metrics and the epoch ends log them: each self.log moves Lightning's result to the device.
    def _common_step(self, batch: tuple[Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        images, labels = batch
        logits = self(images)
        smoothing = self.label_smoothing if stage == "train" else 0.0  # evaluate the plain loss
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        if stage == "train":
            count = len(labels)
            correct = (logits.detach().argmax(1) == labels).sum().float()
            self.train_totals += torch.stack([loss.detach() * count, correct, loss.new_tensor(count)])
        else:
            self._metric(f"{stage}_loss").update(loss.detach(), weight=len(labels))
            self._metric(f"{stage}_acc").update(logits.detach(), labels)
        return loss, logits

    def _diverged(self, symptom: str) -> None:
        callback = self.trainer.checkpoint_callback
        kept = getattr(callback, "last_model_path", "") or "none was saved yet"
        raise UserError(
            f"training diverged at step {self.global_step}: {symptom}. Lower the learning rate "
            f"(model.optimizer / model.scheduler init_args). Last good checkpoint: {kept}."
        )

    def _metric(self, name: str) -> Metric:
        return self.metrics[name]  # type: ignore[return-value]  # ModuleDict is typed as holding any Module

    def _log_epoch(self, stage: str) -> None:
        for name in (f"{stage}_loss", f"{stage}_acc"):
            self.log(name, self._metric(name), prog_bar=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits = self._common_step(batch, "train")
        value = loss.item()  # one sync per step: free on the CPU, and a diverged run must stop before it saves
        if not math.isfinite(value) or value > DIVERGED_LOSS:
            self._diverged(f"the loss is {value:.3g}")
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps the logger writes
            accuracy = (logits.detach().argmax(1) == batch[1]).float().mean()  # this batch's: a line within an epoch
            self.log_dict(
                {"train_loss": loss.detach(), "train_acc": accuracy}, on_step=True, on_epoch=False, prog_bar=True
            )
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._common_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._common_step(batch, "test")[1]  # the logits, for the test report's pictures

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, seen = self.trainer.strategy.reduce(self.train_totals.clone(), reduce_op="sum")
        self.train_totals.zero_()
        if seen:  # nothing when every step of the epoch was skipped; already summed over the processes
            self.log_dict({"train_loss_epoch": loss_sum / seen, "train_acc_epoch": correct / seen}, sync_dist=True)
        parameters = float(sum(p.numel() for p in self.net.parameters()))  # a column of mnist-lite runs
        self.log("parameters", parameters, sync_dist=True)  # the same on every process

    def on_validation_epoch_end(self) -> None:
        loss = self._metric("val_loss").compute().item()
        self._log_epoch("val")
        if self.trainer.state.fn == TrainerFn.FITTING and (not math.isfinite(loss) or loss > DIVERGED_LOSS):
            self._diverged(f"the validation loss is {loss:.3g}")  # before the checkpoint of this epoch is written

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(dim=1)

    # Dropout's random stream and the epoch's sums so far, so that a run resumed mid-epoch goes on where it stopped.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never write a diverged model over a good one
            self._diverged(f"{', '.join(bad[:3])} holds NaN or inf")
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        checkpoint["train_totals"] = self.train_totals.clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Every checkpoint Lightning restores (a given one, a resumed run, SLURM's requeue) is checked against this
        run before it is used: the weights against this network, and what fit restores against what it saves."""
        try:
            trainer = self.trainer
        except RuntimeError:  # load_from_checkpoint: no Trainer, nothing restored but the weights
            return
        path = trainer.ckpt_path or "the checkpoint"
        check_weights({f"net.{k}": v for k, v in self.net.state_dict().items()}, checkpoint, path)
        if trainer.state.fn != TrainerFn.FITTING:
            return
        saved = checkpoint.get("callbacks", {})
        states = [("loops.fit_loop", checkpoint.get("loops", {}).get("fit_loop"), trainer.fit_loop.state_dict())]
        states += [
            (f"callbacks[{c.state_key}]", saved[c.state_key], c.state_dict())
            for c in trainer.callbacks
            if c.state_key in saved
        ]
        with resume.guard(path, "training progress or random state"):
            for where, found, expected in states:
                if difference := resume.layout_difference(found, expected, where):
                    raise UserError(f"refusing {path}: {difference}; it cannot resume this run.")
            if "torch_rng_state" in checkpoint:  # torch checks the generator's state as it sets it
                torch.set_rng_state(checkpoint["torch_rng_state"])
            if "train_totals" in checkpoint and trainer.is_global_zero:  # rank 0's: under DDP the others' are lost
                self.train_totals.copy_(checkpoint["train_totals"].view(3))
        self._restored = checkpoint

    def configure_optimizers(self):
        wants_steps = self.scheduler is not None and _wants_total_steps(self.scheduler)
        total_steps = int(self.trainer.estimated_stepping_batches) if wants_steps else None

        def build(params: Any) -> tuple[torch.optim.Optimizer, Any]:
            optimizer = self.optimizer(params) if self.optimizer else torch.optim.Adam(params, 1e-3)
            steps = {"total_steps": total_steps} if wants_steps else {}
            return optimizer, self.scheduler(optimizer, **steps) if self.scheduler else None

        if self._restored is not None:
            restored = (self._restored.get("lr_schedulers") or [{}])[0]
            planned = restored.get("total_steps", total_steps) if isinstance(restored, dict) else total_steps
            if planned != total_steps:
                raise UserError(
                    f"the resumed run's schedule was built for {shown(planned)} steps and this run has {total_steps}:"
                    " a one-cycle schedule ends where it was planned to. Resume with the same max_epochs, or start a"
                    " new fit."
                )
            resume.try_optimization(self.trainer.ckpt_path, self._restored, build, self.parameters())
        optimizer, scheduler = build(self.parameters())
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _wants_total_steps(factory: LRSchedulerCallable) -> bool:
    """Whether the schedule takes ``total_steps`` and it is unset. The parser's factory is a ``functools.partial``
    that spells out every argument, unset ones as None (its documented ``keywords``); others show a signature."""
    if isinstance(factory, functools.partial) and "total_steps" in factory.keywords:
        return factory.keywords["total_steps"] is None
    try:
        return "total_steps" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
