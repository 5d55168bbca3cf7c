"""``mnist-lite export``: the fitted model for use without Lightning: ONNX, a torch.export program or a state_dict."""

import io
from pathlib import Path
from typing import Any, Literal

import torch

from mnist_lite.boundaries import checkpoints, files
from mnist_lite.errors import UserError

Format = Literal["onnx", "pt2", "state_dict"]
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "state_dict": ".weights.pt"}


def export(ckpt_path: str, output: str | None = None, format: Format = "onnx", overwrite: bool = False) -> None:
    """Write a fitted model as ONNX, a torch.export program or a state_dict, all or nothing.

    Args:
        ckpt_path: a .ckpt file; 'last' for the newest run's last checkpoint; 'best' for the checkpoint with the
            highest val_acc in any run under lightning_logs/.
        output: the file to write, never a checkpoint; by default the checkpoint's name with the format's suffix
            (.onnx, .pt2, .weights.pt), in the current folder. A new file, unless --overwrite is given.
        format: onnx and pt2 (a torch.export program, for torch.export.load) are the fitted model itself, images
            in [0, 1] to logits, for any batch size; state_dict is the network's weights, which the assignment's
            plain module loads.
        overwrite: replace an existing output file.
    """
    source, model = checkpoints.load_given(ckpt_path)
    target = Path(output or source.stem + SUFFIXES[format])
    files.check_output(output or target, "--output", overwrite, inputs=(source,))
    if target.parent.name == "checkpoints":
        raise UserError(f"--output {files.printable(target)}: it names a checkpoint. Export to a file of its own.")
    data = io.BytesIO()  # serialised in memory, so a full disk is an OSError here, not a crash inside torch
    example, batch = (torch.rand(2, 1, 28, 28),), ({0: torch.export.Dim("batch")},)
    if format == "state_dict":
        torch.save(model.net.state_dict(), data)
    elif format == "pt2":
        torch.export.save(torch.export.export(model, example, dynamic_shapes=batch), data)
    else:
        try:
            import onnxscript  # noqa: F401  # torch's ONNX exporter needs it
        except ImportError:
            raise UserError("ONNX export needs onnxscript: pip install 'mnist-lite[export]'.") from None
        names: dict[str, Any] = {"input_names": ["images"], "output_names": ["logits"]}
        onnx = torch.onnx.export(model, example, dynamic_shapes=batch, dynamo=True, verbose=False, **names)
        assert onnx is not None  # None only from the legacy exporter
        data.write(onnx.model_proto.SerializeToString())
    try:
        files.write_atomically(data.getbuffer(), target)
    except OSError as e:
        raise UserError(f"cannot write {files.printable(target)}: {e.strerror or e}.") from None
    print(f"Wrote {files.printable(target)}")
