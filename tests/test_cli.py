"""The CLI in-process: fit, test, the run folders, the subcommands, and every bad input."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ProgressBar

from mnist_lite import __version__
from mnist_lite.cli import PROGRESS_REFRESH_STEPS, cli, main
from mnist_lite.network import CompactCNN

from helpers import CPU, EXAMPLES, TINY, csv_rows, fails, fit_args, run_cli


def test_fit_writes_config_checkpoints_and_metrics(tiny_run: Path) -> None:
    assert (tiny_run / "config.yaml").is_file()
    assert (tiny_run / "metrics.csv").is_file()
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tiny_run / "checkpoints").glob("best-epoch=0-val_acc=*.ckpt"))) == 1


def test_fit_prints_its_run_folder_parameters_and_best_checkpoint(in_tmp: Path, data_dir: Path, capsys) -> None:
    main(fit_args(TINY, data_dir))
    out = capsys.readouterr().out
    assert out.startswith("Run folder: lightning_logs/version_0\n")
    assert "CompactCNN: 13,266 parameters, 13,266 trainable" in out
    best = out.split("Best checkpoint (val_acc=")[1].split(": ", 1)[1].splitlines()[0]
    assert Path(best).is_file() and Path(best).parent == Path("lightning_logs/version_0/checkpoints")


def test_the_epochs_train_metrics_are_the_mean_of_its_steps(in_tmp: Path, data_dir: Path) -> None:
    main(fit_args(TINY, data_dir, "--trainer.log_every_n_steps=1"))  # every step logs its batch; all are full
    rows = csv_rows(Path("lightning_logs/version_0/metrics.csv"))
    steps = [row for row in rows if row["train_acc"]]
    epoch = next(row for row in rows if row["train_acc_epoch"])
    assert len(steps) == 5
    for name in ("train_acc", "train_loss"):
        mean = sum(float(row[name]) for row in steps) / len(steps)
        assert float(epoch[f"{name}_epoch"]) == pytest.approx(mean, abs=1e-6)


def test_test_writes_into_the_evaluated_runs_folder(tiny_run: Path, data_dir: Path, capsys) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    for expected in ("test", "test_1"):  # a second test of the same run gets a folder of its own
        main(["test", "--config", str(TINY), "--ckpt_path", str(ckpt), f"--data.data_dir={data_dir}"])
        out = capsys.readouterr().out
        assert f"Run folder: {tiny_run / expected}\n" in out and "test_acc" in out
        assert "test_acc" in (tiny_run / expected / "metrics.csv").read_text().splitlines()[0]
        assert (tiny_run / expected / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("kind", ["last", "best"])
def test_ckpt_path_last_and_best_find_the_newest_run(kind: str, in_tmp: Path, data_dir: Path, capsys) -> None:
    main(fit_args(TINY, data_dir))
    main(fit_args(TINY, data_dir))  # version_1 is the newest
    capsys.readouterr()
    main(["test", "--config", str(TINY), "--ckpt_path", kind, f"--data.data_dir={data_dir}"])
    out = capsys.readouterr().out
    assert f"Checkpoint: lightning_logs/version_1/checkpoints/{kind}" in out
    assert "Run folder: lightning_logs/version_1/test\n" in out


def test_checkpoint_loads_outside_the_cli_without_pickled_objects(tiny_run: Path) -> None:
    from mnist_lite.classifier import MNISTClassifier

    model = MNISTClassifier.load_from_checkpoint(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert isinstance(model.net, CompactCNN)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mnist-lite {__version__}"


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "{fit,validate,test,predict,augment,export,curves,serve,sweep}" in usage


def test_no_subcommand_names_them_all(capsys) -> None:
    err = fails([], capsys)
    assert "choose a subcommand: fit, validate, test, predict, augment, export, curves, serve, sweep." in err


def test_tool_help_comes_from_the_signature(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["curves", "--help"])
    out = capsys.readouterr().out
    assert "<log_dir>/learning_curves.png when not" in out and out.count("default:") == 1  # output's only


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, "File does not exist"),
        ("model:\n  bogus: 1\n", "does not accept option 'model.bogus'"),
        ("data:\n  batch_size: abc\n", 'key "data.batch_size"'),
        ("data:\n  batch_size: 0\n", "0 does not conform to restriction v>0"),
        ("data:\n  val_size: 60000\n", "val_size=60000 leaves no training images"),
        ("model:\n  optimizer:\n    class_path: builtins.print\n", "builtins.print is not an optimizer"),
        (
            "model:\n  scheduler:\n    class_path: torch.optim.AdamW\n",
            "Expected 'torch.optim.AdamW' to be a subclass of Union[LRScheduler, ReduceLROnPlateau]",
        ),
        (
            "model:\n  optimizer:\n    class_path: torch.optim.SGD\n    init_args: {lr: 0.1, betas: [0.9, 0.99]}\n",
            "model.optimizer: Option 'betas' is not accepted by torch.optim.SGD: its init_args must be parameters",
        ),
    ],
    ids=[
        "missing-config",
        "unknown-key",
        "wrong-type",
        "zero-batch-size",
        "val-size-too-big",
        "not-an-optimizer",
        "not-a-schedule",
        "init-args-of-another-class",
    ],
)
def test_bad_config_is_one_clear_error(config, expected, in_tmp: Path, data_dir: Path, capsys) -> None:
    path = in_tmp / "missing.yaml" if config is None else _write(in_tmp / "bad.yaml", config)
    err = fails(["fit", "--config", str(path), f"--data.data_dir={data_dir}"], capsys)
    assert expected in err
    assert not (in_tmp / "lightning_logs").exists() or not list((in_tmp / "lightning_logs").iterdir())


@pytest.mark.parametrize(
    ("args", "refresh_rate"),
    [
        ([], PROGRESS_REFRESH_STEPS),
        (["--trainer.callbacks=[{class_path: TQDMProgressBar, init_args: {refresh_rate: 3}}]"], 3),
        (["--trainer.enable_progress_bar=false"], None),
    ],
    ids=["default", "users-own-bar", "off"],
)
def test_the_progress_bar_redraws_every_few_steps_unless_configured(args, refresh_rate, data_dir: Path) -> None:
    built = cli(["--config", str(CPU), f"--data.data_dir={data_dir}", "--trainer.logger=false", *args], run=False)
    bars = [c for c in built.trainer.callbacks if isinstance(c, ProgressBar)]
    assert [bar.refresh_rate for bar in bars] == ([refresh_rate] if refresh_rate else [])  # type: ignore[attr-defined]


def test_an_option_typo_is_not_taken_as_a_prefix(in_tmp: Path, capsys) -> None:
    err = fails(["fit", "--config", str(CPU), "--trainer.max_epoch=2"], capsys)
    assert "trainer.max_epoch" in err


def test_defaults_without_a_config_train_one_epoch(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    assert "  max_epochs: 1\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--trainer.max_epochs=-3"], "`max_epochs` must be a non-negative integer or -1"),
        (["--config", str(CPU.parent / "gpu.yaml")], "no usable GPU"),
        (["--config", str(CPU.parent / "logger" / "tensorboard.yaml")], "Install it: pip install -e '.[tensorboard]'."),
    ],
    ids=["negative-epochs", "gpu-without-gpu", "tensorboard-without-the-extra"],
)
def test_trainer_settings_that_cannot_work_here(args, expected, data_dir: Path, in_tmp: Path, capsys) -> None:
    if "GPU" in expected and torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so configs/gpu.yaml works")
    if "tensorboard" in expected and _installed("tensorboard"):
        pytest.skip("tensorboard is installed here, so that config works")
    err = fails(["fit", "--config", str(CPU), *args, f"--data.data_dir={data_dir}"], capsys)
    assert expected in err


SHIPPED = sorted(p for p in CPU.parent.rglob("*.yaml") if p.parent.name != "sweep")


@pytest.mark.parametrize("config", SHIPPED, ids=[str(p.relative_to(CPU.parent)) for p in SHIPPED])
def test_every_shipped_config_parses_on_top_of_cpu_yaml(config: Path) -> None:
    """Parsed by fit's own parser, as the README combines them (nothing built: gpu configs parse on any machine)."""
    base = cli(["--config", str(CPU)], run=False, exit_on_error=False)
    parsed = base.parser.parse_args(["--config", str(CPU), "--config", str(config)])
    assert parsed.trainer.max_epochs >= 1


SPACES = {"cpu.yaml": ["cpu.yaml"], "limit.yaml": ["cpu.yaml", "best.yaml", "distill.yaml"]}  # as their headers say


def test_every_shipped_sweep_space_parses_against_its_base_configs() -> None:
    """sweep checks every bound and choice with fit's parser before a trial runs; a new space needs an entry above."""
    from mnist_lite import search_space
    from mnist_lite.commands.sweep import _check

    assert sorted(p.name for p in (CPU.parent / "sweep").glob("*.yaml")) == sorted(SPACES)
    for space, configs in SPACES.items():
        _check([str(CPU.parent / c) for c in configs], search_space.load(CPU.parent / "sweep" / space))


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_missing_checkpoint(in_tmp: Path, capsys) -> None:
    err = fails(["test", "--ckpt_path", "nope.ckpt"], capsys)
    assert "checkpoint nope.ckpt does not exist: pass the path of a .ckpt written by 'mnist-lite fit'." in err


def test_checkpoint_path_that_is_a_folder_lists_its_checkpoints(tiny_run: Path, capsys) -> None:
    err = fails(["test", "--ckpt_path", str(tiny_run)], capsys)
    assert f"checkpoint {tiny_run} is a folder: pass one .ckpt file. It holds: " in err
    assert str(tiny_run / "checkpoints" / "last.ckpt") in err


def test_file_that_is_not_a_checkpoint(in_tmp: Path, capsys) -> None:
    path = _write(in_tmp / "notes.ckpt", "just some text\n")
    err = fails(["test", "--ckpt_path", str(path)], capsys)
    assert f"{path} is not a readable checkpoint" in err
    assert not (in_tmp / "lightning_logs").exists()


def test_checkpoint_of_another_architecture_names_the_tensors(tiny_run: Path, in_tmp: Path, capsys) -> None:
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    wider = CompactCNN(channels=(8, 16)).state_dict()
    ckpt["state_dict"] = {f"net.{k}": v for k, v in wider.items()}  # hparams still describe 4/8 channels
    path = in_tmp / "wider.ckpt"
    torch.save(ckpt, path)
    err = fails(["test", "--ckpt_path", str(path)], capsys)
    assert "does not match the network it describes" in err
    assert "net.conv1.weight (8, 1, 3, 3) vs (4, 1, 3, 3)" in err


ALLOWED_ON_STDERR = (
    "Seed set to ",
    "`Trainer.fit` stopped: `max_epochs=1` reached.",
    "Restored all states from the checkpoint",
)


def test_commands_print_nothing_but_their_own_lines_on_stderr(data_dir: Path, tmp_path: Path) -> None:
    """fit, test and predict as people run them (progress bar on): stderr holds only a short allow-list."""
    commands = [
        [
            "fit",
            "--config",
            str(CPU),
            f"--data.data_dir={data_dir}",
            "--trainer.limit_train_batches=0.07",
            "--trainer.limit_val_batches=0.2",
        ],
        ["test", "--ckpt_path", "best", f"--data.data_dir={data_dir}"],
        ["predict", "--ckpt_path", "last", "--data.predict_path", str(EXAMPLES)],
    ]
    for command in commands:
        result = run_cli(tmp_path, *command)
        assert result.returncode == 0, result.stderr
        unexpected = [line for line in result.stderr.splitlines() if not line.startswith(ALLOWED_ON_STDERR)]
        assert not unexpected, (command[0], unexpected)
        # Output to a file, as CI's: the progress bar's last line ends before any line of ours starts.
        ours = ("Best checkpoint", "Last checkpoint", "Wrote ")
        glued = [line for line in result.stdout.splitlines() if any(f in line and not line.startswith(f) for f in ours)]
        assert not glued, (command[0], glued)
