"""Export: ONNX and the torch.export program match PyTorch; the state_dict loads into the seed's plain module; none
of them warns."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from mnist_lite.boundaries.checkpoints import load_model
from mnist_lite.cli import main
from mnist_lite.network import CompactCNN
from mnist_lite.training import data_source

from helpers import SEED_NET, fails, on_full_disk, read_only


@pytest.fixture(scope="module")
def pixels(data_dir: Path) -> torch.Tensor:
    images, _ = data_source.load(data_dir, train=False)
    return images[:1000].unsqueeze(1).float() / 255


@pytest.fixture(scope="module", params=["CompactCNN", "OneEpochCNN"])
def checkpoint(request: pytest.FixtureRequest, tiny_run: Path, one_epoch_checkpoint: Path) -> Path:
    """Each of the project's networks, fitted by the CLI (on a tiny budget: the test is of export, not of training)."""
    return tiny_run / "checkpoints" / "last.ckpt" if request.param == "CompactCNN" else one_epoch_checkpoint


@pytest.fixture(scope="module")
def reference(checkpoint: Path, pixels: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return load_model(checkpoint)(pixels)  # the fitted model takes pixels in [0, 1]


def _export(ckpt: Path, fmt: str, output: Path) -> Path:
    main(["export", "--ckpt_path", str(ckpt), "--format", fmt, "--output", str(output)])
    return output


def test_onnx_matches_pytorch_with_a_dynamic_batch(checkpoint, tmp_path, pixels, reference) -> None:
    path = _export(checkpoint, "onnx", tmp_path / "model.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnxruntime.InferenceSession(str(path))
    for batch in (pixels, pixels[:7], pixels[:1]):
        (logits,) = session.run(None, {"images": batch.numpy()})
        assert logits.shape == (len(batch), 10)
        assert np.abs(logits - reference[: len(batch)].numpy()).max() < 1e-4


def test_torch_export_program_matches_pytorch_with_a_dynamic_batch(checkpoint, tmp_path, pixels, reference) -> None:
    program = torch.export.load(_export(checkpoint, "pt2", tmp_path / "model.pt2"))
    with torch.inference_mode():
        for batch in (pixels, pixels[:7], pixels[:1]):
            logits = program.module()(batch)
            assert logits.shape == (len(batch), 10)
            assert (logits - reference[: len(batch)]).abs().max() < 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "state_dict"])
def test_export_warns_nothing(fmt: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated exporter's warning, or any other, fails the test
        _export(tiny_checkpoint, fmt, tmp_path / f"model.{fmt}")


SEED_SCRIPT = (
    SEED_NET
    + """
import sys, numpy as np
net = SeedNet()
net.load_state_dict(torch.load(sys.argv[1], weights_only=True))
net.eval()
pixels = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[3], net((pixels - 0.1307) / 0.3081).numpy())
print("mnist_lite" in sys.modules)
"""
)


@pytest.mark.slow
def test_state_dict_loads_into_the_seeds_plain_module(tiny_checkpoint, tmp_path, pixels) -> None:
    with torch.inference_mode():
        reference = load_model(tiny_checkpoint)(pixels)
    weights = _export(tiny_checkpoint, "state_dict", tmp_path / "weights.pt")
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    result = subprocess.run(
        [sys.executable, "-c", SEED_SCRIPT, str(weights), str(tmp_path / "pixels.npy"), str(tmp_path / "logits.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"  # no mnist_lite import in the seed-style script
    assert np.abs(np.load(tmp_path / "logits.npy") - reference.numpy()).max() < 1e-4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ckpt_path", "missing.ckpt", "--format", "onnx"], "missing.ckpt does not exist"),
        (["--format", "keras"], "format: 'keras' is not one of 'onnx', 'pt2', 'state_dict'."),
        (["--format", "onnx", "--output", "no/such/folder/model.onnx"], "folder no/such/folder does not exist"),
        (["--output", "/dev/null"], "--output /dev/null: it is a link, a folder, a FIFO or a device."),
        (["--output", "a" * 300 + ".onnx"], ": its name is longer than 255 bytes."),
        (["--output", "model.onnx/"], "--output model.onnx: it names a folder. Give a file name."),
        (["--output", "a/" * 2100 + "m.onnx"], ": File name too long."),
    ],
    ids=[
        "missing-checkpoint",
        "unknown-format",
        "missing-folder",
        "device-node",
        "name-too-long",
        "trailing-slash",
        "path-too-long",
    ],
)
def test_export_bad_input(args, expected, tiny_checkpoint, in_tmp: Path, capsys) -> None:
    full = ["--ckpt_path", str(tiny_checkpoint), "--output", "model.out", *args]
    assert expected in fails(["export", *full], capsys)
    assert not [p for p in in_tmp.rglob("*") if p.is_file()]


def test_export_never_replaces_the_checkpoint_or_follows_a_link(tiny_checkpoint, in_tmp: Path, capsys) -> None:
    ckpt = in_tmp / "copy.ckpt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    for output in (ckpt, in_tmp / "other.ckpt"):
        err = fails(
            ["export", "--ckpt_path", str(ckpt), "--format", "onnx", "--output", str(output), "--overwrite"], capsys
        )
        assert "it names a checkpoint" in err
    assert ckpt.read_bytes() == tiny_checkpoint.read_bytes() and not (in_tmp / "other.ckpt").exists()
    (in_tmp / "elsewhere.txt").write_text("keep me")
    (in_tmp / "link.onnx").symlink_to(in_tmp / "elsewhere.txt")
    assert "it is a link" in fails(["export", "--ckpt_path", str(ckpt), "--output", "link.onnx"], capsys)
    assert (in_tmp / "elsewhere.txt").read_text() == "keep me"


def test_export_replaces_an_existing_file_only_when_told(tiny_checkpoint, in_tmp: Path, capsys) -> None:
    (in_tmp / "model.pt").write_text("an earlier export")
    args = ["export", "--ckpt_path", str(tiny_checkpoint), "--format", "state_dict", "--output", "model.pt"]
    assert "--output model.pt: it exists. Choose a new name, or add --overwrite to replace it." in fails(args, capsys)
    assert (in_tmp / "model.pt").read_text() == "an earlier export"
    main([*args, "--overwrite"])
    assert torch.load(in_tmp / "model.pt", weights_only=True).keys() == CompactCNN().state_dict().keys()


@pytest.mark.parametrize(
    ("fmt", "name"), [("onnx", "last.onnx"), ("pt2", "last.pt2"), ("state_dict", "last.weights.pt")]
)
def test_export_without_output_writes_the_checkpoints_name_here(fmt, name, tiny_checkpoint, in_tmp, capsys) -> None:
    args = ["export", "--ckpt_path", str(tiny_checkpoint), "--format", fmt]
    main(args)
    assert capsys.readouterr().out.splitlines()[-1] == f"Wrote {name}"
    assert [p.name for p in in_tmp.iterdir()] == [name]
    assert f"--output {name}: it exists." in fails(args, capsys)  # and a second export never replaces it


def test_read_only_output_folder_leaves_nothing(tiny_checkpoint, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder):
        err = fails(
            [
                "export",
                "--ckpt_path",
                str(tiny_checkpoint),
                "--format",
                "state_dict",
                "--output",
                str(folder / "m.pt"),
            ],
            capsys,
        )
    assert "cannot write" in err
    assert not list(folder.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pt2", "state_dict"])
def test_full_disk_when_exporting(fmt: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    # 20 kB: less than any format needs (50-80 kB).
    result = on_full_disk(
        tmp_path, "out", "20k", "export", f"--ckpt_path={tiny_checkpoint}", f"--format={fmt}", "--output=out/model"
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "mnist-lite: error: cannot write out/model: No space left on device."
    assert not [line for line in result.stdout.splitlines() if line.startswith("out/")]  # not even a partial file


def test_names_from_data_reach_the_terminal_escaped(tiny_checkpoint, in_tmp: Path, capsys) -> None:
    """A run folder's name, on the Checkpoint line and in an error, cannot clear the screen or retitle it."""
    run = in_tmp / "lightning_logs" / "version_\x1b[2J\x1b]0;owned\x07"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(tiny_checkpoint.read_bytes())
    main(["export", "--ckpt_path", "last", "--format", "state_dict"])
    out = capsys.readouterr().out
    err = fails(["export", "--ckpt_path", str(run / "checkpoints" / "gone.ckpt")], capsys)
    for said in (out, err):
        assert "version_\\x1b[2J\\x1b]0;owned\\x07" in said and "\x1b" not in said and "\x07" not in said, said
