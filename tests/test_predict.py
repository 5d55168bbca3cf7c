"""Predicting on people's own images: formats, polarities, sizes, broken files, and the CSV."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lite import data_source
from mnist_lite.cli import cli, main
from mnist_lite.images import DigitFiles, read_image, to_mnist

EXAMPLES = Path(__file__).parents[1] / "examples" / "digits"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _expected(row: dict[str, str]) -> int:
    """The examples are named after their digits: '7_...png', or 'array_14959.npy' for several."""
    name = Path(row["path"]).name
    if row["index"] == "":
        return int(name[0])
    return int(name.split("_")[1].split(".")[0][int(row["index"])])


@pytest.fixture(scope="module")
def mnist_digit(data_dir: Path) -> torch.Tensor:
    images, _ = data_source.load(data_dir, train=False)
    return images[0]  # a 7


def _save(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_to_mnist_keeps_an_mnist_digit(mnist_digit: torch.Tensor) -> None:
    again = to_mnist(mnist_digit.float() / 255)
    assert again.dtype == torch.uint8 and again.shape == (28, 28)
    assert (again.float() - mnist_digit.float()).abs().mean() / 255 < 0.02


def test_both_polarities_odd_sizes_and_rgba_look_alike(mnist_digit: torch.Tensor, tmp_path: Path) -> None:
    big = torch.nn.functional.interpolate(mnist_digit[None, None].float(), size=(90, 60), mode="bilinear")[0, 0]
    canvas = torch.zeros(200, 130)
    canvas[5:95, 60:120] = big  # off-centre, uneven margins, not square
    light_ink = canvas.clamp(0, 255).byte().numpy()
    files = {
        "light_on_dark.png": _save(light_ink, tmp_path / "a.png"),
        "dark_on_light.jpg": _save(255 - light_ink, tmp_path / "b.jpg"),
        "rgba.png": _save(np.stack([np.zeros_like(light_ink)] * 3 + [light_ink], -1), tmp_path / "c.png", "RGBA"),
    }
    made = {name: to_mnist(read_image(path, None)).float() for name, path in files.items()}
    reference = to_mnist(mnist_digit.float() / 255).float()
    for name, image in made.items():
        assert image.shape == (28, 28)
        assert (image - made["light_on_dark.png"]).abs().mean() / 255 < 0.02, name  # polarity and alpha undone
        assert (image - reference).abs().mean() / 255 < 0.08, name  # the same digit, resampled twice
    # centred by centre of mass: within a pixel of the middle
    ys = torch.arange(28.0)
    for image in made.values():
        assert abs((image.sum(1) @ ys) / image.sum() - 14) < 1.5


def test_predict_reads_every_example_format(fitted_checkpoint: Path, in_tmp: Path, capsys) -> None:
    main(["predict", "--ckpt_path", str(fitted_checkpoint), "--data.predict_path", str(EXAMPLES), "--trainer.enable_progress_bar=false"])
    out = capsys.readouterr().out
    written = in_tmp / "lightning_logs" / "version_0" / "predictions.csv"
    assert f"Wrote predictions to {written.relative_to(in_tmp)}: 12 images predicted." in out
    rows = _rows(written)
    assert list(rows[0]) == ["path", "index", "prediction", "confidence", "top1", "top1_prob", "top2", "top2_prob", "top3", "top3_prob", "error"]
    assert {Path(r["path"]).suffix for r in rows} == {".png", ".jpg", ".bmp", ".tiff", ".npy", ".idx"}
    correct = sum(int(r["prediction"]) == _expected(r) for r in rows)
    assert correct >= 11, [(r["path"], r["index"], r["prediction"]) for r in rows]
    for r in rows:
        probs = [float(r[f"top{k}_prob"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and float(r["confidence"]) == probs[0] and r["error"] == ""


def test_broken_files_are_reported_and_the_run_goes_on(fitted_checkpoint: Path, in_tmp: Path, capsys) -> None:
    folder = in_tmp / "mixed"
    folder.mkdir()
    good = (EXAMPLES / "7_dark_on_light_120x160.png").read_bytes()
    (folder / "good.png").write_bytes(good)
    (folder / "truncated.png").write_bytes(good[:40])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    _save(np.full((30, 30), 255, dtype=np.uint8), folder / "blank.png")
    np.save(folder / "wrong_shape.npy", np.zeros((3, 10, 10)))
    main(["predict", "--ckpt_path", str(fitted_checkpoint), "--data.predict_path", str(folder), "--predictions.output", "out.csv",
          "--trainer.enable_progress_bar=false", "--data.eval_batch_size=2"])
    assert "1 images predicted, 5 could not be read (see the error column)" in capsys.readouterr().out
    errors = {Path(r["path"]).name: r["error"] for r in _rows(in_tmp / "out.csv")}
    assert errors["good.png"] == ""
    assert "unreadable" in errors["truncated.png"] and "unreadable" in errors["empty.png"]
    assert "not a supported file type" in errors["notes.txt"]
    assert "blank" in errors["blank.png"]
    assert "expected (N, 28, 28)" in errors["wrong_shape.npy"]


def test_nothing_readable_exits_non_zero(fitted_checkpoint: Path, in_tmp: Path, capsys) -> None:
    (in_tmp / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt_path", str(fitted_checkpoint), "--data.predict_path", "bad.png", "--trainer.enable_progress_bar=false"])
    assert exit_info.value.code != 0
    assert "none of the 1 inputs could be read" in capsys.readouterr().err


@pytest.mark.parametrize(("target", "expected"), [("empty", "the folder is empty"), ("missing", "does not exist")])
def test_empty_or_missing_path_exits_non_zero(target, expected, fitted_checkpoint: Path, in_tmp: Path, capsys) -> None:
    (in_tmp / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt_path", str(fitted_checkpoint), "--data.predict_path", target])
    assert exit_info.value.code != 0
    assert expected in capsys.readouterr().err
    assert not list(in_tmp.rglob("*.csv"))


def test_predictions_are_written_per_batch_not_held(fitted_checkpoint: Path, in_tmp: Path) -> None:
    built = cli(["predict", "--ckpt_path", str(fitted_checkpoint), "--data.predict_path", str(EXAMPLES),
                 "--data.eval_batch_size=3", "--trainer.enable_progress_bar=false"])
    assert built.trainer.predict_loop.predictions == []  # nothing kept in memory for the end
    assert len(_rows(in_tmp / "lightning_logs" / "version_0" / "predictions.csv")) == 12


def test_dataset_loads_lazily(tmp_path: Path) -> None:
    np.save(tmp_path / "many.npy", np.zeros((1000, 28, 28), dtype=np.uint8))
    files = DigitFiles(tmp_path)
    assert len(files) == 1000 and files.items[999] == (str(tmp_path / "many.npy"), 999)
