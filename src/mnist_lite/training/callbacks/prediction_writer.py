"""Writes predictions to a CSV as each batch finishes, so memory stays flat however many images there are."""

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from mnist_lite.boundaries import files
from mnist_lite.errors import UserError

# A spreadsheet reads a cell starting so as a formula: a leading apostrophe makes it text (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

SHOWN = 10  # rows and failures the console shows; the CSV has them all
TOPS = [f"top{k}{prob}" for k in (1, 2, 3) for prob in ("", "_prob")]
HEADER = ["path", "index", "prediction", "confidence", *TOPS, "error"]


class CSVPredictionWriter(BasePredictionWriter):
    """One row per input image: the predicted digit, its softmax probability, the top three, or the error.

    Args:
        output: the CSV file; by default ``predictions.csv`` in the run's log directory.
    """

    first: list[tuple[str, str, str]]  # (file, digit, confidence) of the first rows, for the console
    failures: list[tuple[str, str]]  # (file, why) of the first files that could not be read
    digits: Counter[int]

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        if output is not None:  # checked before the run starts; opened without following a link when it does
            files.check_output(output, "--predictions.output")
        self.output = output

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.output is not None:  # neither the checkpoint nor the images read
            inputs = (trainer.ckpt_path, getattr(trainer.datamodule.hparams, "predict_path", None))
            files.check_output(self.output, "--predictions.output", inputs=tuple(i for i in inputs if i))
        self.path = Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.csv"
        if trainer.world_size > 1:  # each rank predicts its own shard
            self.path = self.path.with_name(f"{self.path.stem}-rank{trainer.global_rank}{self.path.suffix}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            raw = files.open_for_writing(self.path)
        except OSError as e:
            raise UserError(f"cannot write predictions to {self.path}: {e.strerror or e}.") from None
        # A file name that is not UTF-8 is written with its bytes escaped. Closed in on_predict_end.
        self.file = io.TextIOWrapper(raw, newline="", encoding="utf-8", errors="backslashreplace")
        self.csv = csv.writer(self.file)
        self.read, self.failed, self.first, self.digits, self.failures = 0, 0, [], Counter(), []
        self._write([HEADER])

    def write_on_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, prediction: Tensor, batch_indices: Any, batch: Any, *_: Any
    ) -> None:
        sources = batch[1] if isinstance(batch[1], list) else [("MNIST test set", i, "") for i in batch_indices]
        top_probs, top_digits = prediction.float().topk(3, dim=1)
        rows = []
        for (path, index, error), probs, digits in zip(sources, top_probs.tolist(), top_digits.tolist()):
            index = "" if index is None else index
            name = files.printable(f"{path}[{index}]" if index != "" else path)  # shown on the console
            if error:
                self.failed += 1
                self.failures += [(name, files.printable(error))] if len(self.failures) < SHOWN else []
                rows.append([_text(path), index, *[""] * (2 + len(TOPS)), _text(error)])
                continue
            self.read += 1
            self.digits[digits[0]] += 1
            self.first += [(name, str(digits[0]), f"{probs[0]:.2f}")] if len(self.first) < SHOWN else []
            tops = [value for pair in zip(digits, (f"{p:.4f}" for p in probs)) for value in pair]
            rows.append([_text(path), index, digits[0], f"{probs[0]:.4f}", *tops, ""])
        self._write(rows)
        if trainer.received_sigterm:  # Lightning's predict loop never checks: stop here, the rows so far are kept
            self.file.close()
            raise SIGTERMException()

    def _write(self, rows: list[list[Any]]) -> None:
        try:
            self.csv.writerows(rows)
            self.file.flush()
        except OSError as e:
            raise UserError(f"cannot write predictions to {self.path}: {e.strerror or e}.") from None

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.file.close()

    def summary(self) -> str:
        """What the console shows once the progress bar has closed."""
        lines = []
        if self.first:
            width = max(len("file"), *(len(name) for name, _, _ in self.first))
            lines.append(f"{'file':<{width}}  digit  confidence")
            lines += [f"{name:<{width}}  {digit:<5}  {confidence}" for name, digit, confidence in self.first]
            if self.read > len(self.first):
                lines.append(f"... and {self.read - len(self.first):,} more")
            lines.append("digits: " + "  ".join(f"{d}: {self.digits[d]}" for d in range(10)))
        if self.failures:
            lines.append(f"could not read {self.failed}:")
            lines += [f"  {name}: {why}" for name, why in self.failures]
            if self.failed > len(self.failures):
                lines.append(f"  ... and {self.failed - len(self.failures):,} more (the error column)")
        failed = f", {self.failed} could not be read" if self.failed else ""
        plural = "s" if self.read != 1 else ""
        lines.append(f"Wrote predictions to {files.printable(self.path)}: {self.read} image{plural} predicted{failed}.")
        return "\n".join(lines)


def _text(cell: str) -> str:
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell
