"""Your own digits: a folder of them read as predict reads files, added to MNIST or trained on alone, a fit that
starts from a fitted model's weights, and the benchmark that measures what fine-tuning on people's digits gains."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lite.boundaries.images import read_image, to_mnist
from mnist_lite.cli import main
from mnist_lite.errors import UserError
from mnist_lite.network import OneEpochCNN
from mnist_lite.training import data_source, own_digits
from mnist_lite.training.callbacks.start_from import StartFrom
from mnist_lite.training.datamodule import InMemoryDigits, MNISTDataModule
from mnist_lite.training.module import MNISTClassifier

from helpers import CPU, ROOT, TINY, fails, fit_args, last, newest_run, weights

FINETUNE = ROOT / "configs" / "finetune.yaml"


def _draw(folder: Path, data_dir: Path, per_digit: dict[int, int]) -> list[tuple[Path, int]]:
    """MNIST training images as people's files: dark ink on light paper, 64 px, PNG, in a subfolder per digit."""
    images, labels = data_source.load(data_dir, train=True)
    written = []
    for digit, count in per_digit.items():
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in (labels == digit).nonzero().flatten()[:count].tolist():
            path = folder / str(digit) / f"mine_{i}.png"
            Image.fromarray(255 - images[i].numpy()).resize((64, 64)).save(path)
            written.append((path, digit))
    return written


def test_every_file_is_read_as_predict_reads_it(tmp_path: Path, data_dir: Path) -> None:
    written = _draw(tmp_path / "mine", data_dir, {3: 4, 7: 5})
    images, labels = own_digits.read(tmp_path / "mine")
    assert images.dtype == torch.uint8 and images.shape == (9, 28, 28)
    assert sorted(labels.tolist()) == sorted(digit for _, digit in written)
    expected = {tuple(to_mnist(read_image(path, None)).flatten().tolist()): digit for path, digit in written}
    assert {tuple(image.flatten().tolist()): int(label) for image, label in zip(images, labels)} == expected


def test_the_images_join_mnists_training_split_or_replace_it(tmp_path: Path, data_dir: Path) -> None:
    _draw(tmp_path / "mine", data_dir, {0: 3, 1: 2})
    added = MNISTDataModule(data_dir=str(data_dir), own_digits=str(tmp_path / "mine"))
    added.setup("fit")
    assert len(added.splits["train"]) == 55_000 + 5 and len(added.splits["val"]) == 5_000
    alone = MNISTDataModule(data_dir=str(data_dir), own_digits=str(tmp_path / "mine"), own_digits_only=True)
    alone.setup("fit")
    train, val, added_val = alone.splits["train"], alone.splits["val"], added.splits["val"]
    assert (
        isinstance(train, InMemoryDigits) and isinstance(val, InMemoryDigits) and isinstance(added_val, InMemoryDigits)
    )
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1]
    assert torch.equal(val.images, added_val.images)  # still MNIST's held-out split
    with pytest.raises(UserError, match=r"own_digits_only needs data\.own_digits"):
        MNISTDataModule(own_digits_only=True)


def _unreadable(folder: Path, data_dir: Path) -> None:
    _draw(folder, data_dir, {2: 2})
    (folder / "2" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")


def _not_digits(folder: Path, data_dir: Path) -> None:
    _draw(folder, data_dir, {2: 2})
    (folder / "cats").mkdir()


def _flat(folder: Path, data_dir: Path) -> None:
    folder.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "3.png")


def _empty_digits(folder: Path, data_dir: Path) -> None:
    (folder / "4").mkdir(parents=True)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_unreadable, r"1 of 3 images cannot be used; the first, .*torn\.png: "),
        (_not_digits, "needs one subfolder per digit, named 0 to 9; it has cats"),
        (_flat, "needs one subfolder per digit, named 0 to 9"),
        (_empty_digits, "holds 0 images"),
        (lambda folder, data_dir: None, "is not a folder"),
    ],
    ids=["unreadable-picture", "not-a-digit", "no-subfolders", "no-images", "missing"],
)
def test_a_bad_folder_is_one_short_error(make, expected, tmp_path: Path, data_dir: Path) -> None:
    make(tmp_path / "mine", data_dir)
    with pytest.raises(UserError, match=expected) as error:
        own_digits.read(tmp_path / "mine")
    assert len(str(error.value).splitlines()) <= 2


def test_too_many_files_are_refused_before_any_is_read(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    _draw(tmp_path / "mine", data_dir, {5: 3})
    monkeypatch.setattr(own_digits, "MAX_IMAGES", 2)
    monkeypatch.setattr(own_digits, "DataLoader", None)  # nothing may be decoded
    with pytest.raises(UserError, match="holds 3 images: give between 1 and 2 in its digit folders"):
        own_digits.read(tmp_path / "mine")


def test_a_bad_folder_fails_the_fit_in_two_lines(tmp_path: Path, data_dir: Path, in_tmp: Path, capsys) -> None:
    _unreadable(tmp_path / "mine", data_dir)
    err = fails(fit_args(TINY, data_dir, f"--data.own_digits={tmp_path / 'mine'}"), capsys)
    assert "torn.png" in err and "Fix or remove them" in err
    assert not list(in_tmp.glob("lightning_logs/version_*/checkpoints/*.ckpt"))


def test_start_from_takes_the_checkpoints_weights_and_refuses_another_network(tiny_checkpoint: Path) -> None:
    model = MNISTClassifier()
    StartFrom(str(tiny_checkpoint)).setup(None, model, "fit")
    assert all(torch.equal(t, weights(tiny_checkpoint)[k]) for k, t in model.state_dict().items())
    with pytest.raises(UserError, match="holds another network than the config builds"):
        StartFrom(str(tiny_checkpoint)).setup(None, MNISTClassifier(OneEpochCNN()), "fit")
    with pytest.raises(UserError, match=r"StartFrom\.weights: "):
        StartFrom(str(tiny_checkpoint.with_name("absent.ckpt"))).setup(None, model, "fit")


def test_finetune_yaml_trains_on_your_digits_from_a_fitted_model(
    tmp_path: Path, data_dir: Path, in_tmp: Path, tiny_checkpoint: Path
) -> None:
    _draw(tmp_path / "mine", data_dir, dict.fromkeys(range(10), 2))
    configs = ["--config", str(CPU), "--config", str(TINY), "--config", str(FINETUNE)]
    mine = [f"--data.own_digits={tmp_path / 'mine'}", f"--trainer.callbacks.init_args.weights={tiny_checkpoint}"]
    main(["fit", *configs, f"--data.data_dir={data_dir}", *mine, "--trainer.max_epochs=1"])
    run = newest_run()
    assert "own_digits_only: true" in (run / "config.yaml").read_text()
    fitted, tuned, fresh = weights(tiny_checkpoint), weights(last(run)), MNISTClassifier().state_dict()
    # A few steps from the fitted weights: moved from them, and far nearer to them than a fresh network is.
    moved = sum((tuned[k] - fitted[k]).abs().sum() for k in fitted if fitted[k].is_floating_point())
    apart = sum((fresh[k] - fitted[k]).abs().sum() for k in fitted if fitted[k].is_floating_point())
    assert 0 < moved < apart / 10


@pytest.mark.slow
def test_the_benchmark_splits_in_half_and_scores_both_models(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    out = tmp_path / "handwriting-finetune.json"
    script = ROOT / "benchmarks" / "handwriting.py"
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(script.parent))
    fit = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    argv = [str(script), "--finetune", "--limit", "60", f"--data.data_dir={data_dir}", *fit, "--json", str(out)]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    lines = json.loads(out.read_text())["output"]
    assert "Fine-tuned on 30 of the digits, scored on the other 30." in lines
    rows = [line for line in lines if line.startswith("| configs/") or line.startswith("| then configs/")]
    assert [row.split(",")[0] for row in rows] == ["| configs/one_epoch.yaml", "| then configs/finetune.yaml"]
