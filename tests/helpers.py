"""Helpers shared by the test modules (tests import these, never each other). Like conftest.py, this imports no
torch at the top: pytest-xdist's controller loads both before it starts the workers, and would keep them waiting
the 6 s that torch takes."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from filelock import FileLock

from mnist_lite.cli import main

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(__file__).parent / "conf"
TINY = CONF / "tiny.yaml"
CPU = ROOT / "configs" / "cpu.yaml"
DDP = ROOT / "configs" / "ddp_cpu.yaml"
ONE_EPOCH = ROOT / "configs" / "one_epoch.yaml"
EXAMPLES = ROOT / "examples" / "digits"

# The seed's network as plain PyTorch, as a user's own code would have it; run in-process and in subprocesses
# that never import mnist_lite.
SEED_NET = """
import torch
from torch import nn
from torch.nn import functional as F

class SeedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1); self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1); self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(392, 32); self.dropout = nn.Dropout(0.25); self.fc2 = nn.Linear(32, 10)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(self.dropout(F.relu(self.fc1(x.flatten(1)))))
"""


def seed_net() -> torch.nn.Module:
    scope: dict = {}
    exec(SEED_NET, scope)
    return scope["SeedNet"]()


# The scale-out tests' budget (test_ddp.py, test_slurm.py, one reference run for both): configs/cpu.yaml for two
# epochs of 60 steps; on configs/ddp_cpu.yaml's two processes, 32 images a step each. metrics.csv is written from
# step 20 on, which the SLURM preemption test waits for.
SCALE_OUT_STEPS = 60  # a training epoch, per process
SCALE_OUT_EPOCHS = 2


def scale_out_budget(data_dir: Path) -> list[str]:
    """configs/cpu.yaml's options on the scale-out budget, in one process; add DDP_ARGS for two."""
    return [
        "--config",
        str(CPU),
        f"--data.data_dir={data_dir}",
        f"--trainer.limit_train_batches={SCALE_OUT_STEPS}",
        f"--trainer.max_epochs={SCALE_OUT_EPOCHS}",
        "--trainer.limit_val_batches=5",
        "--trainer.log_every_n_steps=10",
        "--trainer.logger.init_args.flush_logs_every_n_steps=20",
    ]


DDP_ARGS = ["--config", str(DDP)]


def launch(launcher: str, cwd: Path, *args: str, bar: bool = False) -> list[tuple[str, str]]:
    """``mnist-lite ARGS`` in two processes: Lightning's own launcher, or torchrun as two nodes of one process each
    (node-rank 0 and 1, as the docs' recipe starts them on two machines). Returns each launch's stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # as from a shell: not what main() set
    env["PYTHONPATH"] = str(Path(__file__).parent)  # every rank must find the shard recorder
    command = [sys.executable, "-m", "mnist_lite", *args, f"--trainer.enable_progress_bar={str(bar).lower()}"]
    if launcher == "lightning":
        nodes = [command]
    else:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
        torchrun += ["--master-addr=127.0.0.1", f"--master-port={free_port()}"]
        fit = [*command[1:], "--trainer.devices=1", "--trainer.num_nodes=2"]
        nodes = [[*torchrun, f"--node-rank={rank}", *fit] for rank in (0, 1)]
    running = [
        subprocess.Popen(n, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in nodes
    ]
    outputs = [p.communicate(timeout=600) for p in running]
    assert [p.returncode for p in running] == [0] * len(running), [err[-3000:] for _, err in outputs]
    return outputs


MID_RUN = 90  # a step of the second epoch: the DDP runs save a checkpoint there, where the resume tests start


def ddp_fit(data_dir: Path, records: str) -> list[str]:
    """``fit`` on the scale-out budget in two processes, each recording what it trained on into ``records``
    (tests/shard_recorder.py), with a checkpoint at step MID_RUN."""
    every = (
        '{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"every_n_train_steps": '
        f'{MID_RUN}, "save_top_k": -1, "filename": "step{{step}}", "auto_insert_metric_name": false}}}}'
    )
    recorder = f'{{"class_path": "shard_recorder.ShardRecorder", "init_args": {{"folder": "{records}"}}}}'
    callbacks = [f"--trainer.callbacks+={every}", f"--trainer.callbacks+={recorder}"]
    return ["fit", *scale_out_budget(data_dir), *DDP_ARGS, *callbacks]


def ddp_fit_as_people_run_it(launcher: str, folder: Path, data_dir: Path) -> None:
    """ddp_fit by ``launcher`` in ``folder``, progress bar on: one run folder, rank 0's lines alone and each on its own
    line, and nothing on stderr."""
    outputs = launch(launcher, folder, *ddp_fit(data_dir, "shards"), bar=True)
    out = "".join(out for out, _ in outputs)
    assert out.count("Run folder: ") == 1 and not glued_lines(out)
    assert all(without_exit_barrier_race(err) == "" for _, err in outputs), [err[-3000:] for _, err in outputs]
    assert [p.name for p in (folder / "lightning_logs").iterdir()] == ["version_0"]


def without_exit_barrier_race(err: str) -> str:
    """A launch's stderr without torchrun's exit-barrier race: node 0's agent hosts the rendezvous store and may exit
    between another agent's last two store calls, which that agent then logs ("Error waiting on exit barrier", after
    the training and its exit code). It comes from torch's agent, not from the command, and only under load."""
    if "Error waiting on exit barrier" not in err:
        return err
    lines = err.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if "[c10d]" in line or "Error waiting on exit barrier" in line)
    return "".join(lines[:first])


def fit_args(config: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(config), f"--data.data_dir={data_dir}", *extra]


def predict_args(ckpt: Path, path: str | Path, *extra: str) -> list[str]:
    """``mnist-lite predict`` of a file or folder with a checkpoint, progress bar off."""
    return [
        "predict",
        "--ckpt_path",
        str(ckpt),
        f"--data.predict_path={path}",
        "--trainer.enable_progress_bar=false",
        *extra,
    ]


def glued_lines(out: str) -> list[str]:
    """The command's own lines that a progress bar left glued to the end of its own line."""
    ours = ("Best checkpoint", "Last checkpoint", "Wrote ")
    return [line for line in out.splitlines() if any(f in line and not line.startswith(f) for f in ours)]


NO_CLUSTER = "run `bash .ci/run --cluster`, or `sudo .ci/cluster start DIR` and set MNIST_LITE_CLUSTER=DIR"


def cluster_env(what: str) -> dict[str, str]:
    """The settings of the private cluster that MNIST_LITE_CLUSTER names (.ci/cluster writes its cluster.env). None
    there: the test fails under CI, which must run it, and skips elsewhere, saying how to start one."""
    folder = os.environ.get("MNIST_LITE_CLUSTER")
    env = folder and Path(folder, "cluster.env")
    if not env or not env.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the {what} tests: MNIST_LITE_CLUSTER names no cluster ({folder})")
        pytest.skip(f"no {what} here: {NO_CLUSTER}")
    return dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """A folder made once per test session, whichever xdist worker asks first (the others wait on a file lock):
    for what is slow to make and only read afterwards."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base  # the workers' shared folder, or the session's
    folder, done = root / name, root / f"{name}.done"
    with FileLock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def main_in(folder: Path, *args: str) -> None:
    """``main(args)`` in-process, run from ``folder``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr("sys.argv", ["mnist-lite"])
        main(list(args))


def tiny_fit(data_dir: Path, *extra: str) -> Path:
    """A tiny fit in the current folder; returns its run folder."""
    main(fit_args(TINY, data_dir, *extra))
    return newest_run()


def newest_run(root: Path = Path("lightning_logs")) -> Path:
    return max(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def run_folder(out: str) -> Path:
    """The folder a command said it writes to (its "Run folder: ..." line)."""
    return Path(next(line for line in out.splitlines() if line.startswith("Run folder: ")).split(": ", 1)[1])


def last(run: Path) -> Path:
    return max(run.glob("checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    import torch

    return torch.load(ckpt, weights_only=True)["state_dict"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fails(args: list[str], capsys: pytest.CaptureFixture, max_lines: int = 2) -> str:
    """Run ``main(args)``, which must exit non-zero with a short message and no traceback; returns stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = [line for line in err.strip().splitlines() if "error" in line or "See '" in line]
    assert message and len(message) <= max_lines, err
    return err


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds a broken image: enough for a decoder's first look."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 6, 0, 0, 0])  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def run_cli(cwd: Path, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``python -m mnist_lite ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "mnist_lite", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def can_make_immutable() -> bool:
    """chattr +i needs CAP_LINUX_IMMUTABLE, which containers often drop even for root."""
    with tempfile.NamedTemporaryFile() as f:
        if subprocess.run(["chattr", "+i", f.name], capture_output=True).returncode != 0:
            return False
        subprocess.run(["chattr", "-i", f.name], check=True)
        return True


def can_unshare_mounts() -> bool:
    """A private mount namespace needs unprivileged user namespaces, which some runners forbid."""
    try:
        return (
            subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode
            == 0
        )
    except FileNotFoundError:
        return False


def on_full_disk(cwd: Path, folder: str, size: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m mnist_lite ARGS`` with ``cwd/folder`` a tmpfs of ``size`` in a private mount namespace; its stdout
    ends with the files left in that folder. Skips where the machine forbids user namespaces."""
    if not can_unshare_mounts():
        pytest.skip("this machine forbids unprivileged user namespaces, so no private tmpfs can be mounted")
    command = " ".join([sys.executable, "-m", "mnist_lite", *args])
    mount = f"mkdir -p {folder} && mount -t tmpfs -o size={size} tmpfs {folder}"
    script = f"{mount} && {command}; code=$?; find {folder} -type f; exit $code"
    unshare = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]
    return subprocess.run(unshare, cwd=cwd, capture_output=True, text=True)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """chmod for ordinary users; root writes through that, so it also gets the immutable attribute."""
    if os.geteuid() == 0 and not can_make_immutable():
        pytest.skip("root here lacks CAP_LINUX_IMMUTABLE, so nothing can make a folder read-only for it")
    path.chmod(0o500)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o700)


def tiff_of_a_strip_per_row(rows: int) -> bytes:
    """A 1 x ``rows`` greyscale TIFF with one strip per row: a decoder call and two table entries each (3 s and
    200 MB to decode 600,000 rows in 7611627, before the decoding worker)."""
    import struct

    import numpy as np

    tags = [(256, 4, 1, 1), (257, 4, 1, rows), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (277, 3, 1, 1)]
    offsets_at = 8 + 2 + 12 * 9 + 4
    tags += [(273, 4, rows, offsets_at), (278, 4, 1, 1), (279, 4, rows, offsets_at + 4 * rows)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in sorted(tags)) + bytes(4)
    offsets = np.arange(offsets_at + 8 * rows, offsets_at + 9 * rows, dtype="<u4").tobytes()
    return b"II*\0" + struct.pack("<I", 8) + ifd + offsets + np.ones(rows, "<u4").tobytes() + b"\x80" * rows
