"""The default logger: Lightning's ``CSVLogger`` in a folder claimed with ``mkdir`` (``run_folders.claim``), so runs
started together never share one. It claims when Lightning first asks for its folder, once the command's checks have
passed, on global rank 0 alone: Lightning gives the other ranks rank 0's folder."""

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from mnist_lite.boundaries import run_folders as runs


class RunLogger(CSVLogger):
    """Lightning's CSV logger (metrics.csv, hparams.yaml) in a folder claimed for this command alone.

    Args:
        save_dir: the folder of all runs.
        name: a subfolder of ``save_dir`` for this family of runs ("" for none).
        version: a fixed folder name, or a number for ``version_N``; by default the next free ``version_N``.
        prefix: put at the start of every metric's name.
        flush_logs_every_n_steps: how often metrics.csv is written.
    """

    def __init__(
        self,
        save_dir: str = str(runs.LOG_ROOT),
        name: str = "",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)
        self._claimed = version  # the folder's name, once claimed or as given
        self._evaluated: tuple[Path, str] | None = None  # the run and the command, for validate/test/predict
        self._parent: Path | None = None  # where this logger claimed its folder

    def evaluate(self, run: Path | None, command: str) -> None:
        """Log ``command`` into the run it evaluates, or beside the runs: ``<run>/test``, then ``<run>/test_1``, ..."""
        self._evaluated = (run or Path(self.root_dir), command)

    @property
    def root_dir(self) -> str:
        return str(self._parent) if self._parent is not None else super().root_dir

    @property
    def version(self) -> int | str | None:  # None on the other ranks, which are given rank 0's folder
        if self._claimed is None and rank_zero_only.rank == 0:
            if self._evaluated is not None:
                parent, command = self._evaluated
                self._claimed, self._parent = runs.claim(parent, command, numbered=False).name, parent
            else:
                folder = runs.claim(Path(super().root_dir), "version", numbered=True)
                self._claimed = int(folder.name.removeprefix("version_"))  # an int shows as v_num on the progress bar
            print(f"Run folder: {self.log_dir}", flush=True)
        return self._claimed

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "failed" and self._claimed is not None and rank_zero_only.rank == 0:
            runs.release(folder := Path(self.log_dir))  # a command that failed before its work leaves no folder
            if not folder.exists():
                print(f"Removed {folder}: the command stopped before writing anything there.", flush=True)
