"""Runs that go wrong: interrupted runs resume exactly, runs repeat exactly, concurrent runs never collide,
diverged runs stop, finished runs say so, and a full disk or a read-only folder fail clearly."""

import csv
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import torch
import yaml

from mnist_lite.cli import main

from helpers import (
    CONF,
    CPU,
    TINY,
    fails,
    fit_args,
    last,
    main_in,
    on_full_disk,
    once,
    read_only,
    same_weights,
    tiny_fit,
    weights,
)

RESUMABLE = ["--config", str(CPU), "--config", str(CONF / "resumable.yaml")]
TOTAL_STEPS = 2 * 60  # resumable.yaml: 2 epochs of 60 batches


def _fit_process(cwd: Path, data_dir: Path) -> subprocess.Popen:
    """A fit in a process of its own, for a signal to stop; the runs it is compared with run in-process."""
    command = [sys.executable, "-m", "mnist_lite", "fit", *RESUMABLE, f"--data.data_dir={data_dir}"]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


@pytest.fixture(scope="session")
def uninterrupted(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fit = ["fit", *RESUMABLE, f"--data.data_dir={data_dir}"]
    folder = once(tmp_path_factory, "uninterrupted", lambda folder: main_in(folder, *fit))
    return last(folder / "lightning_logs" / "version_0")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopped_run_resumes_to_the_same_weights(sig, uninterrupted: Path, data_dir: Path, tmp_path: Path) -> None:
    process = _fit_process(tmp_path, data_dir)
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("last*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(sig)
    code = process.wait(timeout=120)
    assert code == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    if sig == signal.SIGTERM:
        interrupted = "lightning_logs/version_0/checkpoints/interrupted.ckpt"
        said = _text(process.stderr)
        assert "mnist-lite: stopped by SIGTERM; saved step" in said and f"--ckpt_path {interrupted}" in said, said
        assert _step(tmp_path / interrupted) >= _step(last(tmp_path / "lightning_logs" / "version_0"))
    stopped_at = _step(last(tmp_path / "lightning_logs" / "version_0"))  # loads: not half-written
    assert 0 < stopped_at < TOTAL_STEPS

    main_in(tmp_path, "fit", *RESUMABLE, f"--data.data_dir={data_dir}", "--ckpt_path", "last")
    final = last(tmp_path / "lightning_logs" / "version_1")
    assert _step(final) == _step(uninterrupted) == TOTAL_STEPS
    # Bit-exact on the CPU: the same data order from the stopping batch on, and dropout's RNG restored.
    assert same_weights(weights(final), weights(uninterrupted))
    # The epoch it stopped in is logged over all its steps, those before the resume included.
    resumed, whole = _epoch_means(final.parents[1]), _epoch_means(uninterrupted.parents[1])
    assert resumed and all(resumed[epoch] == pytest.approx(whole[epoch], rel=1e-6) for epoch in resumed)


def _epoch_means(run: Path) -> dict[int, tuple[float, float]]:
    rows = csv.DictReader((run / "metrics.csv").open())
    return {
        int(r["epoch"]): (float(r["train_loss_epoch"]), float(r["train_acc_epoch"]))
        for r in rows
        if r["train_loss_epoch"]
    }


@pytest.mark.slow
def test_ctrl_c_saves_the_step_and_prints_the_command_that_resumes_it(
    uninterrupted: Path, data_dir: Path, tmp_path: Path
) -> None:
    process = _fit_process(tmp_path, data_dir)
    _wait_for_a_checkpoint(tmp_path / "lightning_logs" / "version_0" / "checkpoints")
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=120)
    err = _text(process.stderr)
    assert code == 128 + signal.SIGINT, err
    assert "Detected KeyboardInterrupt" not in err and "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("mnist-lite: stopped by Ctrl-C")]
    assert len(said) == 1, err
    command = shlex.split(said[0].partition("resume with: ")[2])
    assert command[:2] == ["mnist-lite", "fit"] and command[-2] == "--ckpt_path", said
    saved = tmp_path / command[-1]
    assert 0 < _step(saved) < TOTAL_STEPS and f"saved step {_step(saved)};" in said[0]
    assert _step(saved) >= _step(last(tmp_path / "lightning_logs" / "version_0"))  # the step, not the last save

    main_in(tmp_path, *command[1:])
    final = last(tmp_path / "lightning_logs" / "version_1")
    assert _step(final) == _step(uninterrupted) == TOTAL_STEPS
    assert same_weights(weights(final), weights(uninterrupted))


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once(data_dir: Path, tmp_path: Path) -> None:
    process = _fit_process(tmp_path, data_dir)
    _wait_for_a_checkpoint(tmp_path / "lightning_logs" / "version_0" / "checkpoints")
    process.send_signal(signal.SIGINT)
    time.sleep(0.02)  # for the first to be taken: two signals at once are one
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == -signal.SIGINT, _text(process.stderr)


def _wait_for_a_checkpoint(folder: Path) -> None:
    deadline = time.monotonic() + 120
    while not list(folder.glob("last*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_last_with_nothing_to_resume(in_tmp: Path, capsys) -> None:
    assert "--ckpt_path last: no last checkpoint under lightning_logs/*/checkpoints" in fails(
        ["fit", "--ckpt_path", "last"], capsys
    )


def test_runs_repeat_exactly_and_another_seed_differs(data_dir: Path, in_tmp: Path) -> None:
    first = weights(last(tiny_fit(data_dir)))
    again = weights(last(tiny_fit(data_dir)))
    other_seed = weights(last(tiny_fit(data_dir, "--seed_everything=1")))
    main(["fit", "--config", "lightning_logs/version_0/config.yaml"])  # a run's saved config repeats it
    repeated = weights(last(Path("lightning_logs/version_3")))
    assert same_weights(first, again) and same_weights(first, repeated)
    assert not same_weights(first, other_seed)


@pytest.mark.slow
def test_three_fits_at_once_in_one_folder_never_collide(tmp_path: Path) -> None:
    """In a fresh folder, so that all three also extract MNIST at the same moment."""
    seeds = (0, 1, 2)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mnist_lite", *fit_args(TINY, Path("data"), f"--seed_everything={s}")],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in seeds
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    runs = sorted((tmp_path / "lightning_logs").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1", "version_2"]
    by_seed = {yaml.safe_load((r / "config.yaml").read_text())["seed_everything"]: r for r in runs}
    assert sorted(by_seed) == list(seeds)
    for (out, _), seed in zip(outputs, seeds):  # each process reports its own folder and checkpoint
        assert f"Last checkpoint: lightning_logs/{by_seed[seed].name}/checkpoints/last.ckpt" in out
    assert not list((tmp_path / "data").rglob("*.partial"))
    with pytest.MonkeyPatch.context() as mp:  # the same seed alone, for reference
        (tmp_path / "alone").mkdir()
        mp.chdir(tmp_path / "alone")
        reference = weights(last(tiny_fit(tmp_path / "data", "--seed_everything=1")))
    assert same_weights(weights(last(by_seed[1])), reference)


@pytest.mark.parametrize(
    "setting", ["--model.optimizer.init_args.lr=.inf", "--model.optimizer.init_args.lr=1e9"], ids=["nan", "explodes"]
)
def test_diverged_run_stops_with_one_line(setting: str, data_dir: Path, in_tmp: Path, capsys) -> None:
    err = fails(fit_args(TINY, data_dir, setting), capsys, max_lines=1)
    assert "mnist-lite: error: training diverged at step" in err and "Lower the learning rate" in err
    assert not list(in_tmp.rglob("*.ckpt"))  # no checkpoint of diverged weights


def test_diverged_run_keeps_the_last_good_checkpoint(data_dir: Path, in_tmp: Path, capsys) -> None:
    # Epoch 0's 5 steps train normally; at step 7 the rate jumps a billionfold.
    explode = [
        "--model.scheduler=torch.optim.lr_scheduler.StepLR",
        "--model.scheduler.init_args.step_size=7",
        "--model.scheduler.init_args.gamma=1e9",
        "--trainer.max_epochs=2",
    ]
    err = fails(fit_args(TINY, data_dir, *explode), capsys, max_lines=1)
    kept = Path("lightning_logs/version_0/checkpoints/last.ckpt")
    assert "training diverged at step" in err and f"Last good checkpoint: {kept}." in err
    assert _step(kept) == 5 and all(torch.isfinite(t).all() for t in weights(kept).values())


def test_a_run_that_diverges_in_its_last_step_ends_non_zero_and_keeps_the_last_good_checkpoint(
    data_dir: Path, in_tmp: Path, capsys
) -> None:
    """The loss of the last step is computed before its update: the update that blows the weights up is found by
    the validation that follows, before the epoch's checkpoint is written over the good one."""
    last_step_explodes = [
        "--model.scheduler=torch.optim.lr_scheduler.MultiStepLR",
        "--model.scheduler.init_args.milestones=[9]",  # 2 epochs of 5 steps: the rate jumps for step 9 alone
        "--model.scheduler.init_args.gamma=1e9",
        "--trainer.max_epochs=2",
    ]
    err = fails(fit_args(TINY, data_dir, *last_step_explodes), capsys, max_lines=1)
    kept = Path("lightning_logs/version_0/checkpoints/last.ckpt")
    assert "training diverged at step 10: the validation loss is" in err and f"Last good checkpoint: {kept}." in err
    assert _step(kept) == 5 and all(torch.isfinite(t).all() for t in weights(kept).values())


def test_resuming_a_finished_run_says_so(data_dir: Path, in_tmp: Path, capsys) -> None:
    tiny_fit(data_dir)
    capsys.readouterr()
    main(fit_args(TINY, data_dir, "--ckpt_path", "last"))
    assert (
        "Nothing left to train: lightning_logs/version_0/checkpoints/last.ckpt had finished its 1 epoch(s)"
        in capsys.readouterr().out
    )


def test_a_one_cycle_schedule_cannot_be_extended(data_dir: Path, in_tmp: Path, capsys) -> None:
    short = ["--trainer.limit_train_batches=5", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
    main(["fit", "--config", str(CPU), f"--data.data_dir={data_dir}", *short])
    err = fails(
        [
            "fit",
            "--config",
            str(CPU),
            f"--data.data_dir={data_dir}",
            *short,
            "--ckpt_path",
            "last",
            "--trainer.max_epochs=2",
        ],
        capsys,
        max_lines=1,
    )
    assert "the resumed run's schedule was built for 5 steps and this run has 10" in err


def test_read_only_data_dir_through_the_cli(tmp_path: Path, capsys) -> None:
    (tmp_path / "locked").mkdir()
    with read_only(tmp_path / "locked"):
        err = fails(
            [
                "fit",
                f"--data.data_dir={tmp_path / 'locked' / 'data'}",
                f"--trainer.logger.init_args.save_dir={tmp_path}/logs",
            ],
            capsys,
            max_lines=1,
        )
        assert f"cannot create {tmp_path}/locked/data/MNIST/raw" in err
        err = fails(["fit", f"--trainer.logger.init_args.save_dir={tmp_path}/locked/logs"], capsys, max_lines=1)
        assert f"cannot create {tmp_path}/locked/logs" in err


@pytest.mark.slow
def test_full_disk_when_checkpointing(data_dir: Path, tmp_path: Path) -> None:
    # 120 kB: room for the logs, not for a 180 kB checkpoint.
    result = on_full_disk(tmp_path, "lightning_logs", "120k", "fit", f"--config={TINY}", f"--data.data_dir={data_dir}")
    assert result.returncode == 1
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert "mnist-lite: error: cannot write checkpoint" in result.stderr
    assert not [line for line in result.stdout.splitlines() if line.endswith((".ckpt", ".partial"))]


def _text(stream: IO[str] | None) -> str:
    return stream.read() if stream else ""


def _line(stream: IO[str] | None) -> str:
    return stream.readline() if stream else ""
