"""After ``mnist-lite test``: pictures of how the model did, written next to the run's logs."""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lite.boundaries import files


class EvaluationReport(Callback):
    """Writes ``confusion_matrix.png``, ``per_class_accuracy.png`` and ``.csv``, and ``most_confident_errors.png``.

    Args:
        errors_shown: how many of the most confidently wrong test images to draw.
    """

    def __init__(self, errors_shown: int = 16) -> None:
        self.errors_shown = errors_shown
        self.written: list[Path] = []

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.confusion = MulticlassConfusionMatrix(num_classes=10).to(pl_module.device)
        # confidence, pixels, true and predicted digit of the most confident errors so far: memory stays bounded
        labels = torch.empty(0, dtype=torch.long)
        self.errors = [torch.empty(0), torch.empty(0, 28, 28), labels, labels]

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Tensor, batch: tuple[Tensor, Tensor], *_: Any
    ) -> None:
        images, labels = batch
        confidence, predicted = outputs.float().softmax(dim=1).max(dim=1)
        self.confusion.update(predicted, labels)
        wrong = predicted != labels
        found = (confidence, images[:, 0].float(), labels, predicted)  # the model's input: pixels in [0, 1]
        merged = [torch.cat([old, new[wrong].cpu()]) for old, new in zip(self.errors, found)]
        keep = merged[0].argsort(descending=True)[: self.errors_shown]
        self.errors = [t[keep] for t in merged]

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        matrix = self.confusion.compute().cpu()  # summed over ranks under DDP
        folder = Path(trainer.log_dir or ".")  # every rank must ask: under DDP it is a broadcast
        if not trainer.is_global_zero:
            return
        from mnist_lite.training import figures  # matplotlib: only once there is something to draw

        images = matrix.sum(dim=1)
        per_class = matrix.diag() / images.clamp(min=1)
        rows = [f"{d},{a:.4f},{n}" for d, (a, n) in enumerate(zip(per_class.tolist(), images.tolist()))]
        folder.mkdir(parents=True, exist_ok=True)
        table = "\n".join(["digit,accuracy,images", *rows, ""])
        files.write_atomically(table.encode(), folder / "per_class_accuracy.csv")
        self.written = [  # the CLI says so once the progress bar closes
            figures.save(figures.confusion_matrix(matrix), folder / "confusion_matrix.png"),
            figures.save(figures.per_class_accuracy(per_class), folder / "per_class_accuracy.png"),
            figures.save(figures.error_grid(*self.errors), folder / "most_confident_errors.png"),
            folder / "per_class_accuracy.csv",
        ]
