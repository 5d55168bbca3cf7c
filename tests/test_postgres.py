"""Sweeps past one machine: workers in two working folders, as on two machines, share one study on a real
PostgreSQL server (`.ci/cluster start DIR` runs a private one on loopback); a worker killed mid-trial costs only
its trial."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

from mnist_lite.commands.sweep.database import GRACE_S

from helpers import CONF, CPU, TINY, cluster_env, main_in

SPACE = CONF / "space.yaml"  # a small one: tests/test_sweep.py sweeps the shipped space
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's URL. Its password comes as docs/sweeps.md advises, from PGPASSWORD."""
    settings = cluster_env("PostgreSQL")
    monkeypatch.setenv("PGPASSWORD", settings["PGPASSWORD"])
    url = settings["MNIST_LITE_POSTGRES"]
    sqlalchemy.create_engine(url).connect().close()  # the server is up, or the test fails saying why
    return url


def _machine(root: Path, name: str, data_dir: Path, steps: int = 5) -> Path:
    """A working folder of its own, as another machine would have: its config points at the shared MNIST."""
    folder = root / name
    folder.mkdir()
    settings = {"data": {"data_dir": str(data_dir)}, "trainer": {"limit_train_batches": steps}}
    (folder / "data.yaml").write_text(yaml.safe_dump(settings))
    return folder


def _sweep(url: str, study: str, trials: int) -> list[str]:
    args = ["sweep", "--config", str(CPU), "--config", str(TINY), "--config", "data.yaml", "--space", str(SPACE)]
    return [*args, "--storage", url, "--study", study, "--trials", str(trials)]


def _worker(folder: Path, url: str, study: str, trials: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mnist_lite", *_sweep(url, study, trials)]
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _states(url: str, study: str) -> dict[int, str]:
    return {t.number: t.state.name for t in optuna.load_study(study_name=study, storage=url).trials}


def test_two_machines_share_one_study_and_lose_no_trial(database: str, data_dir: Path, tmp_path: Path) -> None:
    study = f"two-machines-{os.getpid()}-{time.monotonic_ns()}"
    workers = [_worker(_machine(tmp_path, name, data_dir), database, study, 3) for name in ("a", "b")]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    lines = [line for out, _ in outputs for line in out.splitlines() if line.startswith("trial ")]
    assert _states(database, study) == dict.fromkeys(range(6), "COMPLETE"), lines  # distinct numbers, none lost
    assert sorted(int(line.split()[1].rstrip(":")) for line in lines) == list(range(6))
    optuna.delete_study(study_name=study, storage=database)


def test_a_worker_killed_mid_trial_is_marked_failed_and_the_study_goes_on(
    database: str, data_dir: Path, tmp_path: Path
) -> None:
    study = f"killed-{os.getpid()}-{time.monotonic_ns()}"
    # Trials long enough to be killed mid-way on a fast machine (150 steps once ended before the kill).
    worker = _worker(_machine(tmp_path, "a", data_dir, steps=1000), database, study, 1)
    deadline = time.monotonic() + 120
    while not any(s == "RUNNING" for s in _try_states(database, study).values()):
        assert worker.poll() is None and time.monotonic() < deadline, worker.stderr.read() if worker.stderr else ""
        time.sleep(0.5)
    time.sleep(1)  # its first heartbeat
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert _states(database, study) == {0: "RUNNING"}  # what a dead process leaves behind
    time.sleep(GRACE_S + 1)
    main_in(_machine(tmp_path, "b", data_dir, steps=1000), *_sweep(database, study, 1))  # in-process: no signal to send
    assert _states(database, study) == {0: "FAIL", 1: "COMPLETE"}
    optuna.delete_study(study_name=study, storage=database)


def _try_states(url: str, study: str) -> dict[int, str]:
    try:
        return _states(url, study)
    except KeyError:  # the worker has not made the study yet
        return {}
