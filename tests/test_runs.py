"""Run folders, owned by one logger: claimed on global rank 0 alone, never left behind by a command that failed
before its work; evaluations inside the run they evaluate; last, best and `mnist-lite runs`."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.utilities import rank_zero_only

from mnist_lite.boundaries import run_folders as runs
from mnist_lite.cli import main
from mnist_lite.training.loggers import RunLogger

from helpers import CPU, TINY, fails, fit_args, predict_args, tiny_fit


def _fails_with_output(args: list[str], capsys) -> tuple[str, str]:
    """``main(args)``, which must exit non-zero: its stdout and stderr (``fails`` keeps only stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, captured.err


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
        (["fit", "--ckpt_path=missing.ckpt"], "checkpoint missing.ckpt does not exist"),
        (["test", "--ckpt_path=last"], "--ckpt_path last: no last checkpoint"),
        (["fit", "--data.val_size=60000"], "leaves no training images"),
    ],
    ids=["bad-resume", "nothing-to-test", "bad-setting"],
)
def test_a_command_that_fails_before_its_work_keeps_no_folder_and_prints_none(
    args: list[str], expected: str, in_tmp: Path, data_dir: Path, capsys
) -> None:
    out, err = _fails_with_output([*args, "--config", str(TINY), f"--data.data_dir={data_dir}"], capsys)
    assert expected in err
    assert "Run folder" not in out
    assert not Path("lightning_logs").exists()


def test_a_fit_that_fails_once_started_leaves_no_empty_folder(in_tmp: Path, data_dir: Path, capsys) -> None:
    """A resume whose schedule cannot continue is found only once the trainer knows its step count."""
    one_cycle = ["fit", "--config", str(CPU), "--config", str(TINY), f"--data.data_dir={data_dir}"]
    main(one_cycle)
    out, err = _fails_with_output([*one_cycle, "--trainer.max_epochs=2", "--ckpt_path=last"], capsys)
    assert "the resumed run's schedule was built for 5 steps and this run has 10" in err
    assert sorted(p.name for p in Path("lightning_logs").iterdir()) == ["version_0"]
    _says_it_removed_each_folder_it_named_and_did_not_keep(out)


def _says_it_removed_each_folder_it_named_and_did_not_keep(out: str) -> None:
    named = [Path(line.split(": ", 1)[1]) for line in out.splitlines() if line.startswith("Run folder: ")]
    for folder in named:
        assert folder.is_dir() or f"Removed {folder}: the command stopped before writing anything" in out, out


def test_a_predict_that_fails_on_its_data_says_it_removed_the_folder_it_named(
    tiny_checkpoint: Path, in_tmp: Path, capsys
) -> None:
    """predict claims its folder before it looks at its data, so the folder it named is gone when the data is bad."""
    out, err = _fails_with_output(predict_args(tiny_checkpoint, in_tmp / "missing"), capsys)
    assert "missing does not exist" in err
    assert not (tiny_checkpoint.parents[1] / "predict").exists()
    _says_it_removed_each_folder_it_named_and_did_not_keep(out)


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
    newest, older = (run["val_acc"] for run in runs.find_runs())  # newest first: version_1, then version_0
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


COLUMNS = ["run", "started", "configs", "overrides", "resumed", "parameters", "epochs", "val_acc", "test_acc"]
COLUMNS += ["checkpoints"]


def _table(out: str) -> dict[str, dict[str, str]]:
    """``mnist-lite runs``' table: each run's cells by column, cut where the header's columns start."""
    header, *rows = out.splitlines()
    assert header.split() == COLUMNS
    starts = [header.index(column) for column in COLUMNS]
    return {
        row.split()[0]: {c: row[a:b].strip() for c, a, b in zip(COLUMNS, starts, [*starts[1:], None])} for row in rows
    }


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
    out = capsys.readouterr().out
    table = _table(out)
    assert list(table) == [str(worse), str(better)]
    assert table[str(worse)]["parameters"] == "13,266"  # the network of configs/cpu.yaml, as fit logged it
    assert table[str(worse)]["configs"] == str(TINY) and "last.ckpt" in table[str(worse)]["checkpoints"]
    assert table[str(worse)]["test_acc"] == "" and float(table[str(better)]["test_acc"]) > 0  # only better's tested
    main(["runs", "--sort", "val_acc"])
    assert list(_table(capsys.readouterr().out)) == [str(better), str(worse)]


def test_runs_without_runs_says_how_to_make_one(in_tmp: Path, capsys) -> None:
    assert "no runs under lightning_logs" in fails(["runs"], capsys)


def test_runs_shows_what_each_command_line_set_and_the_run_a_resume_went_on_from(
    in_tmp: Path, data_dir: Path, capsys
) -> None:
    first = tiny_fit(data_dir, "--data.batch_size=16", "--model.optimizer.init_args.lr=0.02")
    resumed = tiny_fit(data_dir, "--data.batch_size=16", "--trainer.max_epochs=2", "--ckpt_path=last")
    capsys.readouterr()
    main(["runs", "--full"])
    full = _table(capsys.readouterr().out)
    set_first = f"data.data_dir={data_dir} data.batch_size=16 model.optimizer.init_args.lr=0.02"
    assert full[str(first)]["overrides"] == set_first and full[str(first)]["resumed"] == ""
    assert full[str(resumed)]["overrides"] == f"data.data_dir={data_dir} data.batch_size=16 trainer.max_epochs=2"
    assert full[str(resumed)]["resumed"] == str(first)  # --ckpt_path=last, as it was when the resume started
    main(["runs"])
    short = _table(capsys.readouterr().out)[str(first)]["overrides"]
    assert len(short) == 40 and short.endswith("…") and set_first.startswith(short[:-1])


def test_runs_help_says_where_the_whole_command_is(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["runs", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--full" in help_text and "The whole command is the first line of the run's config.yaml" in help_text


def _resuming(root: Path, name: str, parent: str) -> Path:
    """A run whose saved config resumed from ``<root>/<parent>``'s last checkpoint."""
    return _run(root, name, config=f"ckpt_path: {root / parent / 'checkpoints' / 'last.ckpt'}\n")


def test_a_runs_history_follows_its_resumes_each_run_once_and_at_most_max_history(tmp_path: Path, capsys) -> None:
    first, second = _resuming(tmp_path, "version_0", "version_1"), _resuming(tmp_path, "version_1", "version_0")
    assert runs.history(first) == [second, first]  # each resumed the other: followed once each
    chain = [_run(tmp_path / "long", "version_0")]
    chain += [_resuming(tmp_path / "long", f"version_{i}", f"version_{i - 1}") for i in range(1, 3 * runs.MAX_HISTORY)]
    assert runs.history(chain[-1]) == chain[-runs.MAX_HISTORY :]
    main(["curves", "--log_dir", str(first)])  # the loop drawn once
    assert capsys.readouterr().out == f"Wrote {first / 'learning_curves.png'}\n"


# A run folder is data: on a shared filesystem, anyone may have written it. Each case below once hung `runs` or
# `curves`, grew it to gigabytes, or ended it in a traceback; now its file is an "unreadable" cell (runs) or one
# line (curves), and the run beside it is listed as before.
METRICS_COLUMNS = {"parameters", "val_acc", "epochs"}  # the columns read from metrics.csv
CONFIG_COLUMNS = {"configs", "overrides", "resumed"}  # the columns read from config.yaml
GOOD_CONFIG = "# mnist-lite fit --config configs/cpu.yaml\nmodel:\n  label_smoothing: 0.05\n"
GOOD_METRICS = "epoch,step,train_loss,val_acc\n0,1,0.5,\n0,2,0.4,\n0,2,,0.5\n"


def _run(root: Path, name: str = "version_0", config: str = GOOD_CONFIG, metrics: str = GOOD_METRICS) -> Path:
    folder = root / name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(config)
    (folder / "metrics.csv").write_text(metrics)
    return folder


def _replace(path: Path, plant) -> None:
    """Put ``plant(path)`` where ``path`` was: a FIFO, a link, a folder, other bytes."""
    path.unlink(missing_ok=True)
    plant(path)


def _big_metrics(path: Path) -> None:
    with open(path, "w") as f:
        f.write("epoch,step,val_acc\n")
        for _ in range(96):  # 96 MB of real rows, over the 16 MB cap
            f.write("0,9,0.5\n" * 125_000)


def _write_deep_yaml(path: Path) -> None:
    path.write_text("model:\n  label_smoothing: " + "[" * 5000 + "]" * 5000 + "\n")


PLANTED_IN_RUNS = {  # case: (file, what replaces it, the columns that become unreadable)
    "fifo-config": ("config.yaml", os.mkfifo, CONFIG_COLUMNS),
    "fifo-metrics": ("metrics.csv", os.mkfifo, METRICS_COLUMNS),
    "fifo-test-metrics": ("test/metrics.csv", os.mkfifo, {"test_acc"}),
    "config-links-to-dev-zero": ("config.yaml", lambda p: p.symlink_to("/dev/zero"), CONFIG_COLUMNS),
    "metrics-of-96-mb": ("metrics.csv", _big_metrics, METRICS_COLUMNS),
    "config-not-utf8": ("config.yaml", lambda p: p.write_bytes(b"# mnist-lite fit \xff\xfe\n"), CONFIG_COLUMNS),
    "val-acc-abc": ("metrics.csv", lambda p: p.write_text("epoch,step,val_acc\n0,9,abc\n"), METRICS_COLUMNS),
    "a-folder-named-config": ("config.yaml", Path.mkdir, CONFIG_COLUMNS),
    "config-5000-deep": ("config.yaml", _write_deep_yaml, {"resumed"}),  # its first line, the command, still reads
    "epoch-of-400-digits": (
        "metrics.csv",
        lambda p: p.write_text(f"epoch,step,val_acc\n{'9' * 400},9,0.5\n"),
        METRICS_COLUMNS,
    ),
}


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # `runs` needs about 0.3 GB of address space


def _mnist_lite(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess:
    """The command in its own process, with 1 GB of address space: a hang is a timeout, a growth a MemoryError."""
    command = [sys.executable, "-m", "mnist_lite", *args]
    return subprocess.run(
        command, stdout=stdout, stderr=subprocess.PIPE, text=True, preexec_fn=_limited_memory, timeout=60
    )


@pytest.mark.parametrize("case", PLANTED_IN_RUNS)
def test_runs_lists_a_run_whose_files_are_hostile_as_unreadable_cells(case: str, tmp_path: Path) -> None:
    good = _run(tmp_path, "version_0")
    bad = _run(tmp_path, "version_1")
    (bad / "test").mkdir()
    (bad / "test" / "metrics.csv").write_text("epoch,step,test_acc\n0,9,0.75\n")
    name, plant, unreadable = PLANTED_IN_RUNS[case]
    _replace(bad / name, plant)
    listed = _mnist_lite("runs", "--log_dir", str(tmp_path))
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr[-2000:]
    cells = _table(listed.stdout)
    assert {c for c, value in cells[str(bad)].items() if value == "unreadable"} == unreadable
    assert cells[str(good)]["configs"] == "configs/cpu.yaml" and cells[str(good)]["val_acc"] == "0.5000"
    if "test_acc" not in unreadable:
        assert cells[str(bad)]["test_acc"] == "0.7500"


def test_a_checkpoint_name_that_holds_no_accuracy_is_never_the_best(tmp_path: Path) -> None:
    checkpoints = _run(tmp_path) / "checkpoints"
    for name in ("best-epoch=0-val_acc=0.9000.ckpt", "x-val_acc=1.2.3.ckpt", "y-val_acc=..ckpt", "w-val_acc=9.ckpt"):
        (checkpoints / name).write_bytes(b"")
    os.mkfifo(checkpoints / "z-val_acc=0.9900.ckpt")  # not a regular file: not a checkpoint either
    assert runs.resolve_checkpoint("best", tmp_path) == checkpoints / "best-epoch=0-val_acc=0.9000.ckpt"
    assert runs.score(checkpoints / "x-val_acc=1.2.3.ckpt") is None


def test_runs_lists_a_run_whose_time_is_past_the_year_9999(tmp_path: Path, monkeypatch) -> None:
    """tmpfs stores any modification time; datetime shows none past 9999."""
    _run(tmp_path)
    monkeypatch.setattr(runs, "_mtime", lambda path: 99_999_999_999_999.0)
    assert runs.find_runs(tmp_path)[0]["started"].year == 9999


def test_runs_shows_control_characters_in_names_as_escapes(tmp_path: Path) -> None:
    folder = _run(tmp_path, "version_\x1b[2J")
    (folder / "checkpoints" / "\x1b]0;owned\x07.ckpt").write_bytes(b"")
    _run(tmp_path, "version_1", config="# mnist-lite fit --trainer.x=\x1b[1m\n")
    _run(tmp_path, "version_2", config='ckpt_path: "elsewhere/\\e[3m/checkpoints/last.ckpt"\n')  # YAML's escape
    listed = _mnist_lite("runs", "--log_dir", str(tmp_path), "--full")
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "version_\\x1b[2J" in listed.stdout and "\\x1b]0;owned\\x07.ckpt" in listed.stdout
    assert "trainer.x=\\x1b[1m" in listed.stdout and "elsewhere/\\x1b[3m" in listed.stdout


@pytest.mark.parametrize("args", [["runs", "--log_dir", "{log_dir}"], ["fit", "--help"], ["--help"]])
def test_runs_ends_quietly_when_its_reader_stops_reading(args: list[str], tmp_path: Path) -> None:
    """``mnist-lite runs | head -2``: the pipe is closed here before the command writes a line. The status is the
    one a shell gives a command stopped by SIGPIPE, 141, for every command (fit's help through LightningCLI)."""
    for index in range(3):
        _run(tmp_path, f"version_{index}")
    command = [sys.executable, "-m", "mnist_lite", *(a.format(log_dir=tmp_path) for a in args)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert err == b"" and process.returncode == 141  # 128 + SIGPIPE


PLANTED_IN_CURVES = {  # case: (file, what replaces it, what curves says; None: it draws the run)
    "fifo-metrics": ("metrics.csv", os.mkfifo, "version_0/metrics.csv is a FIFO, not a regular file."),
    "fifo-config": ("config.yaml", os.mkfifo, None),
    "metrics-not-utf8": (
        "metrics.csv",
        lambda p: p.write_bytes(b"epoch,step,val_acc\n0,9,\xff\n"),
        "is not UTF-8 text",
    ),
    "config-not-utf8": ("config.yaml", lambda p: p.write_bytes(b"model: \xff\n"), None),
    "val-acc-abc": ("metrics.csv", lambda p: p.write_text("step,val_acc\n9,abc\n"), "line 2: could not convert"),
    "step-1.5": ("metrics.csv", lambda p: p.write_text("step,val_acc\n1.5,0.9\n"), "line 2: invalid literal"),
    "config-5000-deep": ("config.yaml", _write_deep_yaml, None),
    "step-of-4000-digits": ("metrics.csv", lambda p: p.write_text(f"step,val_acc\n{'9' * 4000},0.9\n"), "a run logs"),
    "loss-of-1e308": ("metrics.csv", lambda p: p.write_text("step,train_loss\n1,1e308\n2,-1e308\n"), "a run logs"),
    "config-resumes-a-name-too-long": ("config.yaml", lambda p: p.write_text(f"ckpt_path: {'a' * 5000}\n"), None),
    "metrics-header-only": ("metrics.csv", lambda p: p.write_text("step,val_acc\n"), "holds no training metrics"),
}


@pytest.mark.timeout(60)  # a hang fails the test
@pytest.mark.parametrize("case", PLANTED_IN_CURVES)
def test_curves_of_a_run_with_hostile_files_draws_or_says_why_in_a_line(case: str, in_tmp: Path, capsys) -> None:
    folder = _run(in_tmp)
    name, plant, message = PLANTED_IN_CURVES[case]
    _replace(folder / name, plant)
    if message is None:
        main(["curves", "--log_dir", str(folder)])
        assert capsys.readouterr().out == f"Wrote {folder / 'learning_curves.png'}\n"
    else:
        assert message in fails(["curves", "--log_dir", str(folder)], capsys, max_lines=1)


def test_curves_replaces_a_link_at_its_output_and_never_writes_through_it(in_tmp: Path, capsys) -> None:
    folder = _run(in_tmp)
    victim = in_tmp / "victim.txt"
    victim.write_text("keep me")
    (folder / "learning_curves.png").symlink_to(victim)
    main(["curves", "--log_dir", str(folder)])
    assert victim.read_text() == "keep me"
    written = folder / "learning_curves.png"
    assert not written.is_symlink() and written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
