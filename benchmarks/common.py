"""Helpers shared by the benchmark scripts: building the project's own objects from its configs, timing, and
recording a result as JSON with when, where and on what it was measured."""

import argparse
import atexit
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CPU = str(ROOT / "configs" / "cpu.yaml")


def scratch(prefix: str) -> Path:
    """A new temporary folder, removed when the benchmark exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


SCRATCH = str(scratch("mnist-lite-bench-"))  # where Lightning may write its config copy
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
    from mnist_lite.training import data_source  # imports torch: only the benchmarks that need it pay for it

    workdir = scratch(prefix)
    data_source.prepare(workdir / "data")
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
    """The command's own switches for Lightning's chatter (mnist_lite.training.cli.quiet), and no warnings: a
    benchmark's output is its tables."""
    from mnist_lite.training.cli import quiet as lightning_quiet

    lightning_quiet()
    warnings.filterwarnings("ignore")


def build(*args: str):
    """The trainer, model and DataModule that `mnist-lite fit` would build from these arguments."""
    from mnist_lite.training.cli import build as build_cli

    built = build_cli([*args, *QUIET], run=False)
    return built.trainer, built.model, built.datamodule


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, Any]:
    """The CPU, its cores and the memory: what a figure was measured on."""
    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in line
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory, 1),
        "system": platform.system(),
    }


def arguments(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser, with the --json every benchmark takes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write what is printed, stamped, here (docs/performance.md)")
    return parser


def parse_with_fit_options(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The benchmark's own options; every other `--key=value` is an `mnist-lite fit` option that each of its fits
    takes (the smoke tests shrink the budget with --trainer.limit_train_batches=3): in ``args.fit``."""
    args, rest = parser.parse_known_args()
    if not all(a.startswith("--") and "=" in a for a in rest):
        parser.error(f"unrecognized arguments: {' '.join(rest)} (fit options are written --key=value)")
    args.fit = rest
    return args


class _Tee(io.StringIO):
    def __init__(self, out: Any) -> None:
        super().__init__()
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text)
        self.out.flush()
        return super().write(text)


@contextlib.contextmanager
def recorded(path: Path | None, benchmark: str) -> Iterator[None]:
    """Print as usual; with a path, also write the printed lines as JSON, with the date, commit, machine, versions
    and command that made them (benchmarks/render.py puts them in the docs)."""
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    if path is None:
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    data = {
        "benchmark": benchmark,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else ""),
        "machine": machine(),
        "versions": {name: version(name) for name in ("mnist-lite", "torch", "lightning")},
        "python": platform.python_version(),
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "output": tee.getvalue().splitlines(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
