"""Helpers shared by the benchmark scripts: building the project's own objects from its configs, and timing."""

import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from mnist_lite.cli import cli

ROOT = Path(__file__).resolve().parents[1]
CPU = str(ROOT / "configs" / "cpu.yaml")
SCRATCH = tempfile.mkdtemp(prefix="mnist-lite-bench-")  # where Lightning may write its config copy
QUIET = [
    f"--trainer.default_root_dir={SCRATCH}",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
    "--checkpoint.save_top_k=0",
    "--checkpoint.save_last=false",
]


def prepared_workdir(prefix: str) -> Path:
    """A new temporary folder holding the extracted MNIST under data/, for commands run as subprocesses."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    subprocess.run(
        [sys.executable, "-c", "from mnist_lite import data_source; data_source.prepare('data')"],
        cwd=workdir,
        check=True,
    )
    return workdir


@contextlib.contextmanager
def pseudo_terminal() -> Iterator[int]:
    """A file descriptor to write to as to a terminal (a progress bar draws as it would there); `cat` drains it."""
    leader, follower = os.openpty()
    drain = subprocess.Popen(["cat"], stdin=leader, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield follower
    finally:
        os.close(follower)
        drain.kill()
        drain.wait()
        os.close(leader)


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build(*args: str):
    """The trainer, model and DataModule that `mnist-lite fit` would build from these arguments."""
    built = cli([*args, *QUIET], run=False)
    return built.trainer, built.model, built.datamodule


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)
