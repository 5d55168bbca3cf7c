"""``mnist-lite export``: the fitted model for use without Lightning, as ONNX, TorchScript or a plain state_dict."""

import io
import warnings
from pathlib import Path
from typing import Literal

import torch

from mnist_lite.boundaries import checkpoints, files
from mnist_lite.errors import UserError

Format = Literal["onnx", "torchscript", "state_dict"]


def export(ckpt_path: str, output: str, format: Format = "onnx", overwrite: bool = False) -> None:
    """Write a fitted model as ONNX, TorchScript or a plain state_dict, all or nothing.

    Args:
        ckpt_path: a .ckpt file; 'last' for the newest run's last checkpoint; 'best' for the checkpoint with the
            highest val_acc in any run under lightning_logs/.
        output: the file to write. A new file, unless --overwrite is given; never a checkpoint.
        format: onnx and torchscript are the fitted model itself (images in [0, 1] to logits); state_dict is the
            network's weights, which the seed's plain module loads.
        overwrite: replace an existing output file.
    """
    target = Path(output)
    try:
        _check_output(target, overwrite)
    except OSError as e:  # a name too long for the filesystem, a folder that cannot be read, ...
        raise UserError(f"cannot write {output}: {e.strerror or e}.") from None
    source, model = checkpoints.load_given(ckpt_path)
    if target.exists() and target.resolve() == source.resolve():
        raise UserError(f"refusing to write {output}: it is the checkpoint being exported. Choose another --output.")
    data = io.BytesIO()  # serialised in memory, so a full disk is an OSError here, not a crash inside torch
    if format == "state_dict":
        torch.save(model.net.state_dict(), data)
    elif format == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; the format is still asked for
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|trace_method|save)` is deprecated")
            torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 28, 28)), data)
    else:
        _to_onnx(model, data)
    try:
        files.write_atomically(data.getbuffer(), target)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}.") from None
    print(f"Wrote {output}")


def _check_output(output: Path, overwrite: bool) -> None:
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: folder {output.parent} does not exist.")
    if output.suffix == ".ckpt" or output.parent.name == "checkpoints":
        raise UserError(f"refusing to write {output}: it names a checkpoint. Export to a file of its own.")
    if output.is_symlink() or (output.exists() and not output.is_file()):
        raise UserError(f"refusing to write {output}: it is a link or not a regular file. Choose a new file name.")
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists: choose a new --output, or add --overwrite to replace it.")


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
