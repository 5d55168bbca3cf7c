"""Scale-out under a real SLURM cluster (`.ci/cluster start DIR` makes a private one-host one): srun in both of
its forms, the shipped sbatch script, and a preempted job that requeues and resumes to the same weights."""

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import (
    DDP_ARGS,
    ROOT,
    SCALE_OUT_EPOCHS,
    SCALE_OUT_STEPS,
    cluster_env,
    same_weights,
    scale_out_budget,
    weights,
)

SBATCH = ROOT / "examples" / "slurm" / "fit.sbatch"
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="session")
def cluster() -> dict[str, str]:
    """The environment for commands submitted to the cluster: its config, mnist-lite on PATH, no SLURM job of ours."""
    os.environ["SLURM_CONF"] = cluster_env("SLURM")["SLURM_CONF"]  # for scontrol and scancel here too
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    up = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env).stdout
    assert "idle" in up or "mix" in up or "alloc" in up, f"the cluster at {env['SLURM_CONF']} is not up: {up!r}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _fit_args(data_dir: Path) -> list[str]:
    """The scale-out budget on two processes (tests/helpers.py): 2 epochs of 60 steps of 32 images each."""
    return [*scale_out_budget(data_dir), *DDP_ARGS]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def lightnings_own(cluster: dict[str, str], lightning_ddp_run: Path) -> Path:
    """The same fit, launched by Lightning itself (conftest.py's, shared with tests/test_ddp.py): its run folder."""
    return lightning_ddp_run / "lightning_logs" / "version_0"


@pytest.mark.parametrize("layout", [["-N1", "--ntasks-per-node=2"], ["-n", "2"]], ids=["ntasks-per-node", "n"])
def test_srun_fits_in_one_folder_like_lightnings_own_ddp(layout, cluster, data_dir, lightnings_own, tmp_path) -> None:
    result = _run(["srun", *layout, "mnist-lite", "fit", *_fit_args(data_dir)], tmp_path, cluster)
    runs = list((tmp_path / "lightning_logs").iterdir())
    assert [r.name for r in runs] == ["version_0"]
    last = runs[0] / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == SCALE_OUT_EPOCHS * SCALE_OUT_STEPS
    assert same_weights(weights(last), weights(lightnings_own / "checkpoints" / "last.ckpt"))
    assert _val_acc(runs[0]) == _val_acc(lightnings_own)  # synced over both processes, as Lightning's own are
    # one process prints: rank 0's lines, once each, and nothing on stderr but srun's own word that it waited
    assert result.stdout.count("Run folder: ") == 1 and result.stdout.count("Last checkpoint: ") == 1
    assert _without_waiting(result.stderr) == ""


def _without_waiting(err: str) -> str:
    """srun's stderr without the two lines it writes when another job holds the cores (another test's, here)."""
    waiting = re.compile(r"^srun: job \d+ (queued and waiting for resources|has been allocated resources)$")
    return "".join(line for line in err.splitlines(keepends=True) if not waiting.match(line.rstrip("\n")))


def _val_acc(run: Path) -> list[str]:
    with open(run / "metrics.csv", newline="") as f:
        return [row["val_acc"] for row in csv.DictReader(f) if row.get("val_acc")]


def _job_state(job: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in shown.split() if "=" in field)


def _wait(job: str, until: float) -> dict[str, str]:
    while time.monotonic() < until:
        state = _job_state(job)
        if state.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return state
        time.sleep(1)
    raise AssertionError(f"job {job} did not finish: {_job_state(job)}")


def test_the_shipped_sbatch_script_runs_and_a_preempted_job_resumes_to_the_same_weights(
    cluster, data_dir, lightnings_own, tmp_path
) -> None:
    """The docs' recipe as it is shipped, submitted and preempted mid-run: it requeues, resumes and completes."""
    job = _run(["sbatch", "--parsable", str(SBATCH), *_fit_args(data_dir)], tmp_path, cluster).stdout.strip()
    deadline = time.monotonic() + 300
    while not (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").exists():  # past step 20 of epoch 0
        assert time.monotonic() < deadline and _job_state(job).get("JobState") in ("PENDING", "RUNNING")
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)  # what a preemption or the time limit sends
    while (state := _job_state(job)).get("Restarts") != "1" or state.get("JobState") != "PENDING":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    # Not SLURM's requeue delay of two minutes; but a second on, since slurmd refuses a job whose credential was
    # revoked in the same whole second ("Job credential revoked").
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now+2"], check=True)
    state = _wait(job, deadline)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", log
    saved = tmp_path / "slurm" / job / "hpc_ckpt_1.ckpt"
    assert f"mnist-lite: saved {saved.relative_to(tmp_path)}; requeueing SLURM job {job}, which resumes" in log
    assert "Traceback" not in log
    assert 0 < torch.load(saved, weights_only=True)["global_step"] < SCALE_OUT_EPOCHS * SCALE_OUT_STEPS  # mid-run
    assert "Last checkpoint: lightning_logs/version_1/checkpoints/last.ckpt" in log  # the resumed run's
    resumed = tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    assert same_weights(weights(resumed), weights(lightnings_own / "checkpoints" / "last.ckpt"))
