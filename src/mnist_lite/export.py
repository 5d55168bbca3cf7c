"""Exporting a fitted network for use without Lightning: ONNX, TorchScript, or a plain state_dict."""

import io
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from mnist_lite import checkpoints
from mnist_lite.classifier import MNISTClassifier
from mnist_lite.datamodule import MEAN, STD
from mnist_lite.errors import UserError

FORMATS = ("onnx", "torchscript", "state_dict")


class PixelsToLogits(nn.Module):
    """The network behind MNIST's normalisation: images in [0, 1] of shape (N, 1, 28, 28) to (N, 10) logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.mean, self.std = MEAN, STD  # attributes, which TorchScript can see (module globals it cannot)

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)


def load_network(ckpt_path: str | Path) -> nn.Module:
    """The fitted network of a checkpoint, read safely, in eval mode."""
    checkpoint = checkpoints.read(ckpt_path)
    # Build the model the checkpoint describes without its weights, so a mismatch is named, not thrown.
    described = io.BytesIO()
    torch.save({**checkpoint, "state_dict": {}}, described)
    described.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning warns of the missing weights, which are left out on purpose
        model = MNISTClassifier.load_from_checkpoint(described, map_location="cpu", weights_only=True, strict=False)
    checkpoints.check_fits(model, checkpoint, ckpt_path)
    model.load_state_dict(checkpoint["state_dict"])
    return model.net.eval()


def export(ckpt_path: str | Path, format: str, output: str | Path) -> Path:
    """Write the checkpoint's network in ``format`` to ``output``, all or nothing."""
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}: choose from {', '.join(FORMATS)}.")
    output = Path(output)
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: folder {output.parent} does not exist.")
    net = load_network(ckpt_path)
    partial = output.with_name(f".{output.name}.partial")  # renamed once complete: never a half-written file
    try:
        partial.touch()  # fails here, as an OSError, when the folder is not writable
        if format == "state_dict":
            torch.save(net.state_dict(), partial)
        elif format == "torchscript":
            torch.jit.save(torch.jit.script(PixelsToLogits(net)), partial)
        else:
            _to_onnx(PixelsToLogits(net), partial)
        os.replace(partial, output)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}.") from None
    finally:
        partial.unlink(missing_ok=True)
    return output


def _to_onnx(model: nn.Module, path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'mnist-lite[export]'.") from None
    example = torch.rand(2, 1, 28, 28)
    torch.onnx.export(
        model, (example,), str(path), input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))
