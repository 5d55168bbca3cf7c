"""The CLI in-process: fit, test, the saved config, the printed checkpoint, and every bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CONF, fit_args
from mnist_lite import __version__
from mnist_lite.classifier import MNISTClassifier
from mnist_lite.cli import main
from mnist_lite.network import CompactCNN

TINY = CONF / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny fit shared by the tests that only read its outputs."""
    run_dir = tmp_path_factory.mktemp("tiny_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run_dir)
        main(fit_args(TINY, data_dir))
    return run_dir / "lightning_logs" / "version_0"


def test_fit_writes_config_checkpoints_and_metrics(tiny_run: Path) -> None:
    assert (tiny_run / "config.yaml").is_file()
    assert (tiny_run / "metrics.csv").is_file()
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((tiny_run / "checkpoints").glob("best-epoch=0-val_acc=*.ckpt"))) == 1


def test_fit_prints_the_best_checkpoint(in_tmp: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    main(fit_args(TINY, data_dir))
    out = capsys.readouterr().out
    assert "Best checkpoint (val_acc=" in out
    best = out.split("Best checkpoint")[1].split(": ", 1)[1].splitlines()[0]
    assert Path(best).is_file()


def test_test_subcommand_reports_accuracy(tiny_run: Path, in_tmp: Path, data_dir: Path, capsys) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    main(["test", "--config", str(TINY), "--ckpt_path", str(ckpt), f"--data.data_dir={data_dir}"])
    assert "test_acc" in capsys.readouterr().out
    metrics = (in_tmp / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "test_acc" in metrics.splitlines()[0]


def test_saved_config_reruns(tiny_run: Path, in_tmp: Path) -> None:
    main(["fit", "--config", str(tiny_run / "config.yaml")])
    assert (in_tmp / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_checkpoint_loads_outside_the_cli_without_pickled_objects(tiny_run: Path) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"
    model = MNISTClassifier.load_from_checkpoint(ckpt, weights_only=True)
    assert isinstance(model.net, CompactCNN)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_same_config_and_seed_give_identical_weights(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    weights = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)
        main(fit_args(TINY, data_dir))
        ckpt = torch.load("lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
        weights.append(ckpt["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "mnist_lite", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"mnist-lite {__version__}"


def _fails(args: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


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
    ],
    ids=["missing-config", "unknown-key", "wrong-type", "zero-batch-size", "val-size-too-big"],
)
def test_bad_config_is_one_clear_error(config, expected, in_tmp: Path, capsys) -> None:
    path = in_tmp / "missing.yaml" if config is None else _write(in_tmp / "bad.yaml", config)
    err = _fails(["fit", "--config", str(path)], capsys)
    assert expected in err
    assert len(err.strip().splitlines()) <= 3
    assert not (in_tmp / "lightning_logs").exists()


def test_missing_checkpoint(in_tmp: Path, capsys) -> None:
    err = _fails(["test", "--ckpt_path", "nope.ckpt"], capsys)
    assert err.strip() == "mnist-lite: error: checkpoint nope.ckpt does not exist: pass the path of a .ckpt written by 'mnist-lite fit'."


def test_file_that_is_not_a_checkpoint(in_tmp: Path, capsys) -> None:
    path = _write(in_tmp / "notes.ckpt", "just some text\n")
    err = _fails(["test", "--ckpt_path", str(path)], capsys)
    assert f"{path} is not a readable checkpoint" in err
    assert not (in_tmp / "lightning_logs").exists()


def test_checkpoint_of_another_architecture_names_the_tensors(tiny_run: Path, in_tmp: Path, capsys) -> None:
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    wider = CompactCNN(channels=(8, 16)).state_dict()
    ckpt["state_dict"] = {f"net.{k}": v for k, v in wider.items()}  # hparams still describe 4/8 channels
    path = in_tmp / "wider.ckpt"
    torch.save(ckpt, path)
    err = _fails(["test", "--ckpt_path", str(path)], capsys)
    assert "different architecture" in err
    assert "net.conv1.weight (8, 1, 3, 3) vs (4, 1, 3, 3)" in err
