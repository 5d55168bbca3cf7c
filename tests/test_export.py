"""Export: ONNX and TorchScript match PyTorch; the state_dict loads into the seed's plain module."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from mnist_lite import data_source
from mnist_lite.cli import main
from mnist_lite.export import PixelsToLogits, load_network


@pytest.fixture(scope="module")
def pixels(data_dir: Path) -> torch.Tensor:
    images, _ = data_source.load(data_dir, train=False)
    return images[:1000].unsqueeze(1).float() / 255


@pytest.fixture(scope="module")
def reference(fitted_checkpoint: Path, pixels: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return PixelsToLogits(load_network(fitted_checkpoint))(pixels)


def _export(ckpt: Path, fmt: str, output: Path) -> Path:
    main(["export", "--ckpt_path", str(ckpt), "--format", fmt, "--output", str(output)])
    return output


def test_onnx_matches_pytorch_with_a_dynamic_batch(fitted_checkpoint, tmp_path, pixels, reference) -> None:
    path = _export(fitted_checkpoint, "onnx", tmp_path / "model.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnxruntime.InferenceSession(str(path))
    for batch in (pixels, pixels[:7]):
        (logits,) = session.run(None, {"images": batch.numpy()})
        assert logits.shape == (len(batch), 10)
        assert np.abs(logits - reference[: len(batch)].numpy()).max() < 1e-4


def test_torchscript_matches_pytorch(fitted_checkpoint, tmp_path, pixels, reference) -> None:
    scripted = torch.jit.load(str(_export(fitted_checkpoint, "torchscript", tmp_path / "model.pt")))
    with torch.inference_mode():
        assert (scripted(pixels) - reference).abs().max() < 1e-4


SEED_SCRIPT = """
import sys, numpy as np, torch
from torch import nn
from torch.nn import functional as F

class Net(nn.Module):  # the seed's network, as plain PyTorch
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1); self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1); self.bn2 = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(392, 32); self.dropout = nn.Dropout(0.25); self.fc2 = nn.Linear(32, 10)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(self.dropout(F.relu(self.fc1(x.flatten(1)))))

net = Net()
net.load_state_dict(torch.load(sys.argv[1], weights_only=True))
net.eval()
pixels = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[3], net((pixels - 0.1307) / 0.3081).numpy())
print("mnist_lite" in sys.modules)
"""


def test_state_dict_loads_into_the_seeds_plain_module(fitted_checkpoint, tmp_path, pixels, reference) -> None:
    weights = _export(fitted_checkpoint, "state_dict", tmp_path / "weights.pt")
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    result = subprocess.run(
        [sys.executable, "-c", SEED_SCRIPT, str(weights), str(tmp_path / "pixels.npy"), str(tmp_path / "logits.npy")],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == "False"  # no mnist_lite import in the seed-style script
    assert np.abs(np.load(tmp_path / "logits.npy") - reference.numpy()).max() < 1e-4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ckpt_path", "missing.ckpt", "--format", "onnx"], "missing.ckpt does not exist"),
        (["--format", "keras"], "invalid choice: 'keras'"),
        (["--format", "onnx", "--output", "no/such/folder/model.onnx"], "folder no/such/folder does not exist"),
    ],
    ids=["missing-checkpoint", "unknown-format", "unwritable-output"],
)
def test_export_bad_input(args, expected, fitted_checkpoint, in_tmp: Path, capsys) -> None:
    full = ["--ckpt_path", str(fitted_checkpoint), "--output", "model.out", *args]
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *full])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not [p for p in in_tmp.rglob("*") if p.is_file()]


def test_read_only_output_folder_leaves_nothing(fitted_checkpoint, tmp_path: Path, capsys) -> None:
    from test_data import read_only

    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder), pytest.raises(SystemExit):
        main(["export", "--ckpt_path", str(fitted_checkpoint), "--format", "torchscript", "--output", str(folder / "m.pt")])
    assert "cannot write" in capsys.readouterr().err
    assert not list(folder.iterdir())
