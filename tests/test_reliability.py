"""Trust: interrupted runs resume exactly, runs repeat exactly, checkpoints cannot run code, bad files fail clearly."""

import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import CONF, ROOT, fit_args
from mnist_lite import data_source
from mnist_lite.classifier import MNISTClassifier
from mnist_lite.cli import main
from mnist_lite.datamodule import normalize
from mnist_lite.network import CompactCNN

RESUMABLE = ["--config", str(ROOT / "configs" / "cpu.yaml"), "--config", str(CONF / "resumable.yaml")]
TOTAL_STEPS = 3 * 60  # resumable.yaml: 3 epochs of 60 batches


def _fit_process(cwd: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "mnist_lite", "fit", *RESUMABLE, f"--data.data_dir={data_dir}", *extra]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _last(run: Path) -> Path:
    return max(run.glob("checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)


def _weights(ckpt: Path) -> dict:
    checkpoint = torch.load(ckpt, weights_only=True)
    return {"state": checkpoint["state_dict"], "step": checkpoint["global_step"]}


def _accuracy(ckpt: Path, data_dir: Path) -> float:
    images, labels = data_source.load(data_dir, train=False)
    model = MNISTClassifier.load_from_checkpoint(ckpt, weights_only=True).eval()
    with torch.inference_mode():
        return (model(normalize(images)).argmax(1) == labels).float().mean().item()


@pytest.fixture(scope="module")
def uninterrupted(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    process = _fit_process(cwd, data_dir)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    return _last(cwd / "lightning_logs" / "version_0")


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
        assert "stopped by SIGTERM" in process.stderr.read()
    stopped_at = _weights(_last(tmp_path / "lightning_logs" / "version_0"))["step"]  # loads: not half-written
    assert 0 < stopped_at < TOTAL_STEPS

    resumed = _fit_process(tmp_path, data_dir, "--ckpt_path", "last")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    final, reference = _weights(_last(tmp_path / "lightning_logs" / "version_1")), _weights(uninterrupted)
    assert final["step"] == reference["step"] == TOTAL_STEPS
    # Bit-exact on the CPU: the same data order from the stopping batch on, and dropout's RNG restored.
    assert all(torch.equal(final["state"][k], reference["state"][k]) for k in reference["state"])
    resumed_acc = _accuracy(_last(tmp_path / "lightning_logs" / "version_1"), data_dir)
    assert abs(resumed_acc - _accuracy(uninterrupted, data_dir)) <= 0.001


def test_last_with_nothing_to_resume(in_tmp: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--ckpt_path", "last"])
    assert "no last.ckpt under lightning_logs/*/checkpoints" in capsys.readouterr().err


def _tiny_fit(data_dir: Path, *extra: str) -> dict:
    main(fit_args(CONF / "tiny.yaml", data_dir, *extra))
    return _weights(_last(max(Path("lightning_logs").glob("version_*"), key=lambda p: p.stat().st_mtime)))["state"]


def test_another_seed_gives_other_weights_and_the_saved_config_repeats(data_dir: Path, in_tmp: Path) -> None:
    first = _tiny_fit(data_dir)
    other_seed = _tiny_fit(data_dir, "--seed_everything=1")
    assert not all(torch.equal(first[k], other_seed[k]) for k in first)
    main(["fit", "--config", "lightning_logs/version_0/config.yaml"])
    repeated = _weights(_last(Path("lightning_logs/version_2")))["state"]
    assert all(torch.equal(first[k], repeated[k]) for k in first)


# ---- hostile and broken checkpoints, at every entry point that takes one ----

class _WritesMarker:
    """Unpickled unsafely, this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def good_checkpoint(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("good")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        main(fit_args(CONF / "tiny.yaml", data_dir))
    return cwd / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def _bad_checkpoint(kind: str, good: Path, folder: Path) -> tuple[Path, str]:
    path = folder / f"{kind}.ckpt"
    checkpoint = torch.load(good, weights_only=True)
    if kind == "hostile":
        checkpoint["payload"] = _WritesMarker(folder / "marker")
        torch.save(checkpoint, path)
        return path, "refusing to load"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path, "is not a readable checkpoint"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "is empty (0 bytes)"
    if kind == "other_channels":
        checkpoint["state_dict"] = {f"net.{k}": v for k, v in CompactCNN(channels=(6, 12)).state_dict().items()}
        torch.save(checkpoint, path)
        return path, "net.conv1.weight (6, 1, 3, 3) vs (4, 1, 3, 3)"
    checkpoint["state_dict"]["net.fc1.weight"][0, 0] = math.nan
    torch.save(checkpoint, path)
    return path, "non-finite weights (NaN or inf in net.fc1.weight)"


ENTRY_POINTS = {
    "validate": ["validate"],
    "test": ["test"],
    "predict": ["predict", "--data.predict_path", str(ROOT / "examples" / "digits")],
    "fit": ["fit", "--trainer.max_epochs=2"],
    "export": ["export", "--format", "onnx", "--output", "model.onnx"],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("kind", ["hostile", "truncated", "empty", "other_channels", "nan"])
def test_bad_checkpoint_is_refused_everywhere(kind, entry, good_checkpoint, data_dir, in_tmp: Path, capsys) -> None:
    path, expected = _bad_checkpoint(kind, good_checkpoint, in_tmp)
    args = [*ENTRY_POINTS[entry], "--ckpt_path", str(path)]
    if entry != "export":
        args.append(f"--data.data_dir={data_dir}")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (in_tmp / "marker").exists()
    assert not (in_tmp / "model.onnx").exists() and not (in_tmp / "lightning_logs").exists()


# ---- bad data and a full disk ----

@pytest.mark.parametrize("damage", ["wrong_magic", "wrong_count", "truncated"])
def test_corrupt_idx_in_data_dir_is_replaced(damage: str, data_copy: Path, caplog) -> None:
    target = data_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    if damage == "wrong_magic":
        data[2:4] = b"\x0d\x03"
    elif damage == "wrong_count":
        data[4:8] = (59_999).to_bytes(4, "big")
    else:
        data = data[: len(data) // 3]
    target.write_bytes(bytes(data))
    data_source.prepare(data_copy)
    assert "fails its MD5 check" in caplog.text
    _, labels = data_source.load(data_copy, train=True)
    assert len(labels) == 60_000


def test_read_only_data_dir_through_the_cli(tmp_path: Path, capsys) -> None:
    from test_data import read_only

    with read_only(tmp_path), pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--data.data_dir={tmp_path / 'data'}", f"--trainer.default_root_dir={tmp_path}"])
    assert exit_info.value.code != 0
    assert f"cannot create {tmp_path}/data/MNIST/raw" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare to mount a private tmpfs")
def test_full_disk_when_checkpointing(data_dir: Path, tmp_path: Path) -> None:
    # A 120 kB tmpfs in a private mount namespace: room for the logs, not for a 180 kB checkpoint.
    fit = f"{sys.executable} -m mnist_lite fit --config {CONF / 'tiny.yaml'} --data.data_dir={data_dir}"
    script = f"mkdir -p lightning_logs && mount -t tmpfs -o size=120k tmpfs lightning_logs && {fit}; code=$?; find lightning_logs -type f; exit $code"
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert "mnist-lite: error: cannot write checkpoint" in result.stderr
    assert not [line for line in result.stdout.splitlines() if line.endswith((".ckpt", ".partial"))]
