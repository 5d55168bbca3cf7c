"""A callback for tests/test_ddp.py: each rank writes a digest of every training image it was given, per epoch, and
the thread count it trained with."""

import hashlib
import json
from pathlib import Path

import torch
from lightning.pytorch import Callback


class ShardRecorder(Callback):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = batch[0].cpu().contiguous()
        digests = [hashlib.md5(image.numpy().tobytes()).hexdigest() for image in images]
        self.seen.setdefault(trainer.current_epoch, []).extend(digests)

    def on_train_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"threads": torch.get_num_threads(), "seen": self.seen}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
