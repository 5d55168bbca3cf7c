"""Under SLURM: save a checkpoint at the end of the step in progress when told to stop, requeue the job, resume."""

import os
import re
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer

from mnist_lite.errors import UserError

_NUMBER = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")


class Requeued(Exception):
    """Raised by every process once the job is asked to requeue: the command ends there, before SLURM stops it."""


class RequeueOnSignal(Callback):
    """SIGUSR1 (``#SBATCH --signal=USR1@90``, or ``scancel --signal=USR1``) stops every process after its step; an
    ``hpc_ckpt_N.ckpt`` is saved where Lightning's SLURM support resumes from, and the job is requeued, to reach the
    weights of a run never stopped (tests/test_slurm.py). Lightning's own handler saves mid-step. Outside SLURM this
    callback does nothing."""

    def __init__(self) -> None:
        self.asked = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and SLURMEnvironment.detect():  # as Lightning decides; it then leaves the signal to us
            signal.signal(signal.SIGUSR1, self._ask)

    def _ask(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        asked = self.asked
        if trainer.world_size > 1:  # the processes agree on the step: the signal reaches each at its own moment
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        if not asked:
            return
        folder = Path(trainer.default_root_dir)
        numbers = [int(m.group(1)) for p in folder.glob("hpc_ckpt_*.ckpt") if (m := _NUMBER.search(p.name))]
        path = folder / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"  # the name Lightning resumes from
        trainer.save_checkpoint(path, weights_only=False)
        trainer.strategy.barrier("requeue")  # every process is past the save before the job is requeued
        # SLURM sends SIGTERM as it requeues the job. Each process is already on its way out (Requeued, below);
        # Lightning's handler would instead talk to processes that may be gone, and end in a traceback.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        job = SLURMEnvironment.job_id()
        if trainer.is_global_zero:
            # Said before the requeue: SLURM stops this job as it requeues it, and a line after may never be written.
            print(f"mnist-lite: saved {path}; requeueing SLURM job {job}, which resumes from it.", flush=True)
            done = subprocess.run(["scontrol", "requeue", str(job)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                why = done.stderr.strip() or f"exit code {done.returncode}"
                raise UserError(f"scontrol requeue failed ({why}): resume with --ckpt_path {path}")
        raise Requeued


def complete_srun_environment() -> None:
    """``srun -n N`` tells each task how many run on each node in SLURM_TASKS_PER_NODE ("2", or "2(x3)" for three
    nodes), but not in SLURM_NTASKS_PER_NODE, which Lightning's SLURM environment requires. When every node runs
    the same number of tasks the two say the same, so it is filled in; an uneven layout is refused in one line."""
    if "SLURM_NTASKS" not in os.environ or "SLURM_NTASKS_PER_NODE" in os.environ or "SLURM_STEP_ID" not in os.environ:
        return
    layout = os.environ.get("SLURM_TASKS_PER_NODE", "")
    even = re.fullmatch(r"(\d+)(?:\(x\d+\))?", layout)
    if even is None:
        raise UserError(
            f"srun placed the tasks unevenly ({layout} per node), and every node must run as many: "
            "srun --nodes=N --ntasks-per-node=K mnist-lite ..."
        )
    os.environ["SLURM_NTASKS_PER_NODE"] = even.group(1)
