"""Run folders, owned by one logger: claimed on global rank 0 alone, never left behind by a command that failed
before its work; evaluations inside the run they evaluate; last, best and `mnist-lite runs`."""

from pathlib import Path

import pytest
from lightning.pytorch.utilities import rank_zero_only

from mnist_lite import runs
from mnist_lite.cli import main
from mnist_lite.loggers import RunLogger

from helpers import CPU, TINY, fails, fit_args, tiny_fit


def test_each_fit_claims_a_new_version_folder_and_says_so(in_tmp: Path, data_dir: Path, capsys) -> None:
    for expected in ("version_0", "version_1"):
        main(fit_args(TINY, data_dir))
        assert f"Run folder: lightning_logs/{expected}\n" in capsys.readouterr().out
    assert sorted(p.name for p in Path("lightning_logs").iterdir()) == ["version_0", "version_1"]


@pytest.mark.parametrize("rank", [0, 1])
def test_only_global_rank_zero_claims_a_folder(rank: int, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    logger = RunLogger(save_dir=str(tmp_path))
    if rank == 0:
        assert logger.version == 0 and (tmp_path / "version_0").is_dir()
    else:
        assert logger.version is None and not list(tmp_path.iterdir())  # Lightning broadcasts rank 0's folder


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fit", "--model.teacher=missing.ckpt"], "model.teacher: checkpoint missing.ckpt does not exist"),
        (["fit", "--ckpt_path=missing.ckpt"], "checkpoint missing.ckpt does not exist"),
        (["test", "--ckpt_path=last"], "--ckpt_path last: no last checkpoint"),
        (["fit", "--data.val_size=60000"], "leaves no training images"),
    ],
    ids=["bad-teacher", "bad-resume", "nothing-to-test", "bad-setting"],
)
def test_a_command_that_fails_before_its_work_keeps_no_folder_and_prints_none(
    args: list[str], expected: str, in_tmp: Path, data_dir: Path, capsys
) -> None:
    err = fails([*args, "--config", str(TINY), f"--data.data_dir={data_dir}"], capsys)
    assert expected in err
    assert "Run folder" not in capsys.readouterr().out
    assert not Path("lightning_logs").exists()


def test_a_fit_that_fails_once_started_leaves_no_empty_folder(in_tmp: Path, data_dir: Path, capsys) -> None:
    """A resume whose schedule cannot continue is found only once the trainer knows its step count."""
    one_cycle = ["fit", "--config", str(CPU), "--config", str(TINY), f"--data.data_dir={data_dir}"]
    main(one_cycle)
    err = fails([*one_cycle, "--trainer.max_epochs=2", "--ckpt_path=last"], capsys)
    assert "the resumed run's schedule was built for 5 steps and this run has 10" in err
    assert sorted(p.name for p in Path("lightning_logs").iterdir()) == ["version_0"]


def test_evaluations_write_into_the_run_they_evaluate(tiny_run: Path, data_dir: Path, capsys) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    for expected in ("test", "test_1"):  # a second test of the same run gets a folder of its own
        main(["test", "--config", str(TINY), "--ckpt_path", str(ckpt), f"--data.data_dir={data_dir}"])
        out = capsys.readouterr().out
        assert f"Run folder: {tiny_run / expected}\n" in out and "test_acc" in out
        assert "test_acc" in (tiny_run / expected / "metrics.csv").read_text().splitlines()[0]
        assert (tiny_run / expected / "confusion_matrix.png").is_file()


@pytest.fixture
def two_runs(in_tmp: Path, data_dir: Path) -> tuple[Path, Path]:
    """version_0, the better model (5 steps), then version_1, the newest and worse one (1 step)."""
    better = tiny_fit(data_dir)
    worse = tiny_fit(data_dir, "--trainer.limit_train_batches=1", "--model.optimizer.init_args.lr=0.0001")
    newest, older = (run.val_acc for run in runs.find_runs())  # newest first: version_1, then version_0
    assert newest is not None and older is not None and newest < older
    return better, worse


def test_last_is_the_newest_runs_and_best_the_highest_val_acc_of_any_run(two_runs, data_dir: Path, capsys) -> None:
    better, worse = two_runs
    assert runs.resolve_checkpoint("last") == worse / "checkpoints" / "last.ckpt"
    best = runs.resolve_checkpoint("best")
    assert best.parent == better / "checkpoints" and best.name.startswith("best-")
    capsys.readouterr()
    main(["test", "--config", str(TINY), "--ckpt_path", "best", f"--data.data_dir={data_dir}"])
    val_acc = runs.score(best)
    assert f"Checkpoint: {best} (run {better}, val_acc {val_acc:.4f})\n" in capsys.readouterr().out


def test_runs_lists_every_run_newest_first_and_sorts_by_any_column(two_runs, data_dir: Path, capsys) -> None:
    better, worse = two_runs
    main(
        [
            "test",
            "--config",
            str(TINY),
            "--ckpt_path",
            str(better / "checkpoints" / "last.ckpt"),
            f"--data.data_dir={data_dir}",
        ]
    )
    capsys.readouterr()
    main(["runs"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "started", "configs", "epochs", "val_acc", "test_acc", "checkpoints"]
    assert [line.split()[0] for line in lines[1:]] == [str(worse), str(better)]
    assert str(TINY) in lines[1] and "last.ckpt" in lines[1]
    assert len(lines[2].split()) == len(lines[1].split()) + 1  # only the better run has a test_acc
    main(["runs", "--sort", "val_acc"])
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [str(better), str(worse)]


def test_runs_without_runs_says_how_to_make_one(in_tmp: Path, capsys) -> None:
    assert "no runs under lightning_logs" in fails(["runs"], capsys)
