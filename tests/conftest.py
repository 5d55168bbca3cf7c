import os
import shutil
from pathlib import Path

import matplotlib
import pytest

from mnist_lite import data_source
from mnist_lite.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(__file__).parent / "conf"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--ckpt", help="a checkpoint fitted by 'mnist-lite fit --config configs/cpu.yaml' (or MNIST_LITE_CKPT)")


@pytest.fixture(autouse=True)
def _headless_matplotlib() -> None:
    matplotlib.use("agg")


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """main(args) is called in-process: pytest's own argv must not look like extra CLI arguments."""
    monkeypatch.setattr("sys.argv", ["mnist-lite"])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled MNIST extracted once per session; tests that damage files copy it first."""
    path = tmp_path_factory.mktemp("data")
    data_source.prepare(path)
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so lightning_logs/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fit_args(config: Path, data_dir: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(config), f"--data.data_dir={data_dir}", *extra]


@pytest.fixture(scope="session")
def fitted_checkpoint(request: pytest.FixtureRequest, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint really fitted by the CLI with configs/cpu.yaml: the one CI just trained, or one fitted here."""
    given = request.config.getoption("--ckpt") or os.environ.get("MNIST_LITE_CKPT")
    if given:
        return Path(given).resolve()
    run_dir = tmp_path_factory.mktemp("cpu_fit")
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        main(fit_args(ROOT / "configs" / "cpu.yaml", data_dir, "--trainer.enable_progress_bar=false"))
    finally:
        os.chdir(cwd)
    return run_dir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture
def data_copy(data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the extracted data, safe to damage."""
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy
