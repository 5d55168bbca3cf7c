import os
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import CPU, ONE_EPOCH, TINY, ddp_fit_as_people_run_it, fit_args, main_in, once

# A sweep worker killed mid-trial is declared dead after this many seconds without a heartbeat (8 by default):
# set before the sweep module is imported, and inherited by the workers the tests start.
os.environ.setdefault("MNIST_LITE_SWEEP_GRACE_S", "4")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ckpt", help="a checkpoint fitted by 'mnist-lite fit --config configs/cpu.yaml' (or MNIST_LITE_CKPT)"
    )


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """main(args) is called in-process: pytest's own argv must not look like extra CLI arguments."""
    monkeypatch.setattr("sys.argv", ["mnist-lite"])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled MNIST extracted once per session; tests that damage files copy it first."""
    from mnist_lite.training import data_source  # torch: not at the top (helpers.py says why)

    return once(tmp_path_factory, "data", data_source.prepare)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so lightning_logs/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def data_copy(data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the extracted data, safe to damage."""
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy


@pytest.fixture(scope="session")
def one_epoch_checkpoint(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/one_epoch.yaml's network on tiny.yaml's budget: a OneEpochCNN checkpoint the CLI fitted."""
    configs = ["--config", str(CPU), "--config", str(ONE_EPOCH), "--config", str(TINY)]
    fit = ["fit", *configs, f"--data.data_dir={data_dir}"]
    folder = once(tmp_path_factory, "one_epoch_run", lambda folder: main_in(folder, *fit))
    return folder / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny fit (tests/conf/tiny.yaml) shared by the tests that only read its outputs: its run folder."""
    folder = once(tmp_path_factory, "tiny_run", lambda folder: main_in(folder, *fit_args(TINY, data_dir)))
    return folder / "lightning_logs" / "version_0"


@pytest.fixture
def tiny_checkpoint(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny fit's checkpoint, in a run folder of its own: for what needs a checkpoint the CLI
    fitted, but not a good one (the fast tier); what the test writes beside it is the test's alone."""
    copy = tmp_path_factory.mktemp("tiny") / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(tiny_run / "checkpoints" / "last.ckpt", copy)
    return copy


@pytest.fixture(scope="session")
def lightning_ddp_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """helpers.ddp_fit launched by Lightning itself: the reference of tests/test_ddp.py and tests/test_slurm.py, made
    once whichever worker asks first. Its working folder; the tests only read it."""
    return once(tmp_path_factory, "ddp_lightning", lambda f: ddp_fit_as_people_run_it("lightning", f, data_dir))


def _check_fitted_with_cpu_yaml(path: Path) -> None:
    if not path.is_file():
        raise pytest.UsageError(f"--ckpt / MNIST_LITE_CKPT: {path} does not exist.")
    import torch

    hparams = torch.load(path, weights_only=True).get("hyper_parameters", {})
    expected = yaml.safe_load(CPU.read_text())["model"]
    for key, value in expected.items():
        if hparams.get(key) != value and not (isinstance(value, dict) and _contains(hparams.get(key), value)):
            raise pytest.UsageError(
                f"--ckpt / MNIST_LITE_CKPT: {path} was not fitted with configs/cpu.yaml "
                f"(model.{key} is {hparams.get(key)!r}); the accuracy thresholds assume it."
            )


def _contains(found: object, expected: dict) -> bool:
    """Every key of ``expected`` (nested) has the same value in ``found``, which may hold more (the defaults)."""
    if not isinstance(found, dict):
        return False
    return all(_contains(found.get(k), v) if isinstance(v, dict) else found.get(k) == v for k, v in expected.items())


@pytest.fixture(scope="session")
def fitted_checkpoint(request: pytest.FixtureRequest, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint really fitted by the CLI with configs/cpu.yaml: the one CI just trained, or one fitted here."""
    given = request.config.getoption("--ckpt") or os.environ.get("MNIST_LITE_CKPT")
    if given:
        _check_fitted_with_cpu_yaml(Path(given))
        # A copy in a run folder of its own: what the tests evaluate is written there, not beside the original.
        copy = tmp_path_factory.mktemp("given") / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
        copy.parent.mkdir(parents=True)
        shutil.copyfile(given, copy)
        return copy
    fit = fit_args(CPU, data_dir, "--trainer.enable_progress_bar=false")
    folder = once(tmp_path_factory, "cpu_fit", lambda folder: main_in(folder, *fit))
    return folder / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
