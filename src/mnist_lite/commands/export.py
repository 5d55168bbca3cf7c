"""``mnist-lite export``: the fitted model for use without Lightning, as ONNX, TorchScript or a plain state_dict."""

import io
import warnings
from pathlib import Path
from typing import Literal

import torch

from mnist_lite import checkpoints, runs
from mnist_lite.errors import UserError

Format = Literal["onnx", "torchscript", "state_dict"]


def export(ckpt_path: str, output: str, format: Format = "onnx") -> None:
    """Write a fitted model as ONNX, TorchScript or a plain state_dict, all or nothing.

    Args:
        ckpt_path: a checkpoint written by mnist-lite fit, or last or best for the newest run's.
        output: the file to write; an existing regular file is replaced, never the checkpoint itself.
        format: onnx and torchscript are the fitted model itself (images in [0, 1] to logits); state_dict is the
            network's weights, which the seed's plain module loads.
    """
    checkpoint = runs.checkpoint_path(ckpt_path)
    target = _check_output(Path(output), checkpoint)
    model = checkpoints.load_model(checkpoint)
    data = io.BytesIO()  # serialised in memory, so a full disk is an OSError here, not a crash inside torch
    if format == "state_dict":
        torch.save(model.net.state_dict(), data)
    elif format == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; the format is still asked for
            for message in (
                r"`torch\.jit\.(script|save)` is deprecated",
                r"`LightningModule\.to_torchscript` has been",
            ):
                warnings.filterwarnings("ignore", message=message)
            torch.jit.save(model.to_torchscript(), data)
    else:
        _to_onnx(model, data)
    try:
        checkpoints.write_atomically(data.getbuffer(), target)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}.") from None
    print(f"Wrote {output}")


def _check_output(output: Path, ckpt_path: Path) -> Path:
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: folder {output.parent} does not exist.")
    if output.is_symlink() or (output.exists() and not output.is_file()):
        raise UserError(f"refusing to write {output}: it is a link or not a regular file. Choose a new file name.")
    if output.exists() and ckpt_path.exists() and output.samefile(ckpt_path):
        raise UserError(f"refusing to write {output}: it is the checkpoint being exported. Choose another --output.")
    return output


def _to_onnx(model: torch.nn.Module, file: io.BytesIO) -> None:
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'mnist-lite[export]'.") from None
    example = torch.rand(2, 1, 28, 28)
    torch.onnx.export(
        model,
        (example,),
        file,  # type: ignore[arg-type]  # the TorchScript-based exporter writes to any binary file object
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load_from_string(file.getvalue()))
