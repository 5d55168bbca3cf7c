"""Lightning's checkpoint IO through this project's own: strict reads (checkpoints.py) and atomic writes (files.py)."""

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lite.boundaries import checkpoints, files
from mnist_lite.errors import UserError


class SafeCheckpointIO(TorchCheckpointIO):
    """Every checkpoint Lightning reads (``--ckpt_path``, SLURM's requeue, a resumed run) goes through
    ``checkpoints.read``; the one the CLI has already checked is handed over: the Trainer restores the bytes checked."""

    preloaded: tuple[Path, dict[str, Any]] | None = None  # set by training/cli.py

    def __init__(self) -> None:
        super().__init__()
        self.folders: set[Path] = set()  # where this process writes checkpoints

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory first, so a full disk shows as the OSError it is
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomically(buffer.getbuffer(), path)
            self.folders.add(path.resolve().parent)
        except OSError as e:
            raise UserError(
                f"cannot write checkpoint {path}: {e.strerror or e}. Free space or log elsewhere."
            ) from None

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if self.preloaded is not None and Path(path).resolve() == self.preloaded[0].resolve():
            return self.preloaded[1]
        return checkpoints.read(path)

    def remove_checkpoint(self, path: str | Path) -> None:
        """Lightning removes the checkpoints a newer one replaces, by paths that a resumed checkpoint's state gives,
        which are data: only a .ckpt file in a folder this process writes checkpoints into is removed, never a link
        (tests/test_trust.py)."""
        given, resolved = Path(path), Path(path).resolve()
        ours = resolved.suffix == ".ckpt" and resolved.parent in self.folders
        if ours and not given.is_symlink() and resolved.is_file():
            resolved.unlink()
