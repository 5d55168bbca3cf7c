"""Checkpoints are data: nothing named inside one is imported, called or built unless it is on the allow-list;
configs are bounded; hostile and broken checkpoints are refused in one line at every entry point."""

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_lite.network import CompactCNN

from helpers import EXAMPLES, fails, run_cli
from trojan import MARKER_ENV

# Each command that reads a checkpoint, ending with the option that names it.
ENTRY_POINTS = {
    "validate": ["validate", "--ckpt_path"],
    "test": ["test", "--ckpt_path"],
    "predict": ["predict", "--data.predict_path", str(EXAMPLES), "--ckpt_path"],
    "fit": ["fit", "--trainer.max_epochs=2", "--ckpt_path"],
    "export": ["export", "--format", "onnx", "--output", "model.onnx", "--ckpt_path"],
    "teacher": ["fit", "--model.teacher"],
}


def _run_entry(entry: str, path: Path, data_dir: Path, capsys) -> str:
    args = [*ENTRY_POINTS[entry], str(path)]
    if entry != "export":
        args.append(f"--data.data_dir={data_dir}")
    return fails(args, capsys, max_lines=1)


def _nothing_written(folder: Path) -> bool:
    return not (folder / "model.onnx").exists() and not (folder / "lightning_logs").exists()


# ---- hyperparameters that name code: every way jsonargparse or Lightning would resolve one ----


def _code_naming_hparams(marker: Path) -> dict[str, dict]:
    touch = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    run = {"class_path": "builtins.exec", "init_args": {"source": f"open({str(marker)!r}, 'w')"}}
    return {
        "optimizer-class_path": {"optimizer": touch},
        "scheduler-class_path": {"scheduler": run},
        "optimizer-callable-string": {"optimizer": "os.system"},
        "lambda-schedule": {
            "scheduler": {"class_path": "torch.optim.lr_scheduler.LambdaLR", "init_args": {"lr_lambda": "os.system"}}
        },
        "_instantiator": {"_instantiator": "builtins.exec"},
        "_class_path": {"_class_path": "trojan.AlwaysThree"},
        "nested-init_args": {"net": {"class_path": "mnist_lite.network.CompactCNN", "init_args": {"hidden": touch}}},
        "dotted-init_arg": {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": "os.getcwd"}}},
        "trojan-network": {"net": {"class_path": "trojan.AlwaysThree", "init_args": {}}},
        "unknown-key": {"callback": touch},
    }


HOSTILE = list(_code_naming_hparams(Path("m")))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("variant", HOSTILE)
def test_hyperparameters_naming_code_are_refused_everywhere(
    variant: str, entry: str, tiny_run: Path, data_dir: Path, in_tmp: Path, capsys, monkeypatch
) -> None:
    marker = in_tmp / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    sys.modules.pop("trojan", None)  # so that an import by the CLI would run the module again
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"].update(_code_naming_hparams(marker)[variant])
    path = in_tmp / "hostile.ckpt"
    torch.save(checkpoint, path)
    err = _run_entry(entry, path, data_dir, capsys)
    assert "refusing" in err and "hyperparameter" in err
    assert not marker.exists()
    assert "trojan" not in sys.modules
    assert _nothing_written(in_tmp)


def test_the_users_own_config_may_name_its_network(tiny_run: Path, data_dir: Path, in_tmp: Path, capsys) -> None:
    """A class the user names is the user's code: the same class in the checkpoint is then accepted."""
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["net"] = {"class_path": "trojan.AlwaysThree", "init_args": {}}
    torch.save(checkpoint, in_tmp / "own.ckpt")
    from mnist_lite.cli import main

    main(
        [
            "test",
            "--ckpt_path",
            "own.ckpt",
            "--model.net=trojan.AlwaysThree",
            f"--data.data_dir={data_dir}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert "test_acc" in capsys.readouterr().out


def test_described_shapes_are_checked_before_anything_is_allocated(tiny_run: Path, in_tmp: Path) -> None:
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    # 392 x 3,000,000 floats: 4.7 GB, were the network built before its shapes were compared.
    checkpoint["hyper_parameters"]["net"] = {
        "class_path": "mnist_lite.network.CompactCNN",
        "init_args": {"hidden": 3_000_000},
    }
    torch.save(checkpoint, in_tmp / "big.ckpt")
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_lite", "test", "--ckpt_path", "big.ckpt"],
        cwd=in_tmp,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    err = process.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 1
    assert "does not match the network it describes" in err and "net.fc1.weight (32, 392) vs (3000000, 392)" in err
    assert usage.ru_maxrss < 3 * 2**20  # kB: torch itself takes about 1 GB


# ---- broken checkpoints: the same entry points, one line each ----


class _WritesMarker:
    """Unpickled unsafely, this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _broken_checkpoint(kind: str, good: Path, folder: Path) -> tuple[Path, str]:
    path = folder / f"{kind}.ckpt"
    checkpoint = torch.load(good, weights_only=True)
    if kind == "pickle":
        checkpoint["payload"] = _WritesMarker(folder / "marker")
        torch.save(checkpoint, path)
        return path, "which is not a tensor or a container of them"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path, "is not a checkpoint: not a PyTorch zip archive"
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


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("kind", ["pickle", "truncated", "empty", "other_channels", "nan"])
def test_broken_checkpoint_is_refused_everywhere(kind, entry, tiny_run, data_dir, in_tmp: Path, capsys) -> None:
    path, expected = _broken_checkpoint(kind, tiny_run / "checkpoints" / "last.ckpt", in_tmp)
    err = _run_entry(entry, path, data_dir, capsys)
    assert expected in err
    assert not (in_tmp / "marker").exists()
    assert _nothing_written(in_tmp)


# ---- configs: trusted code, but bounded in what they cost ----

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize("kind", ["alias-bomb", "huge"])
def test_config_that_would_expand_without_bound_fails_fast(kind: str, in_tmp: Path, capsys) -> None:
    if kind == "alias-bomb":
        text, expected = BILLION_LAUGHS, "values through its aliases, more than the 100,000 allowed"
    else:
        text = "data:\n  augment:\n    affine:\n      degrees: [" + ", ".join(["1"] * 2_000_000) + "]\n"
        text, expected = text, "more than the 1,000,000 allowed"
    (in_tmp / "bad.yaml").write_text(text)
    start = time.monotonic()
    err = fails(["fit", "--config", "bad.yaml"], capsys)
    assert expected in err
    assert time.monotonic() - start < 30


def test_config_may_not_name_a_denied_import_path(in_tmp: Path, capsys) -> None:
    (in_tmp / "bad.yaml").write_text(
        f"model:\n  optimizer:\n    class_path: os.system\n    init_args: {{command: touch {in_tmp / 'marker'}}}\n"
    )
    err = fails(["fit", "--config", "bad.yaml"], capsys)
    assert "model.optimizer: importing 'os.system' is not allowed" in err
    assert not (in_tmp / "marker").exists()


# ---- the subprocess path: the same refusal when run as a program ----


def test_refusal_as_a_program(tiny_run: Path, in_tmp: Path) -> None:
    checkpoint = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["optimizer"] = {"class_path": "os.system", "init_args": {"command": "touch marker"}}
    torch.save(checkpoint, in_tmp / "hostile.ckpt")
    result = run_cli(in_tmp, "test", "--ckpt_path", "hostile.ckpt")
    assert result.returncode == 1 and not (in_tmp / "marker").exists()
    assert result.stderr.strip().splitlines()[-1] == (
        "mnist-lite: error: refusing hostile.ckpt: hyperparameter optimizer.class_path = 'os.system' is not on the "
        "allow-list and not named by your config."
    )
