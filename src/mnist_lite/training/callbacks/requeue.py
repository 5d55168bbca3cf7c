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
    """SIGUSR1 (``#SBATCH --signal=USR1@90``, or ``scancel --signal=USR1``) stops every process after its step, saves
    ``hpc_ckpt_N.ckpt`` where Lightning's SLURM support resumes from, and requeues the job. Lightning's own handler
    saves mid-step. Outside SLURM this callback does nothing."""

    asked = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and SLURMEnvironment.detect():  # Lightning then leaves the signal to us
            signal.signal(signal.SIGUSR1, self._ask)

    def _ask(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        asked = self.asked
        if trainer.world_size > 1:  # the signal reaches each process at its own moment: agree on the step
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        if not asked:
            return
        folder = Path(trainer.default_root_dir)
        numbers = [int(m.group(1)) for p in folder.glob("hpc_ckpt_*.ckpt") if (m := _NUMBER.search(p.name))]
        path = folder / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"  # the name Lightning resumes from
        trainer.save_checkpoint(path, weights_only=False)
        trainer.strategy.barrier("requeue")  # every process is past the save before the job is requeued
        # SLURM's SIGTERM at the requeue: Lightning's handler would talk to processes that may be gone (a traceback).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        job = SLURMEnvironment.job_id()
        if trainer.is_global_zero:
            # Before the requeue: SLURM stops the job as it requeues it, and a line after may never be written.
            print(f"mnist-lite: saved {path}; requeueing SLURM job {job}, which resumes from it.", flush=True)
            done = subprocess.run(["scontrol", "requeue", str(job)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                why = done.stderr.strip() or f"exit code {done.returncode}"
                raise UserError(f"scontrol requeue failed ({why}): resume with --ckpt_path {path}")
        raise Requeued


def complete_srun_environment() -> None:
    """``srun -n N`` sets SLURM_TASKS_PER_NODE ("2", or "2(x3)" for three nodes) but not SLURM_NTASKS_PER_NODE,
    which Lightning's SLURM environment requires: filled in from it when every node runs as many tasks."""
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
