"""The nine augmentations: the registry, the picture, and their batched training-time use."""

from pathlib import Path

import matplotlib.image
import pytest
import torch
from lightning.pytorch import Trainer

from mnist_lite.cli import main
from mnist_lite.errors import UserError
from mnist_lite.training import data_source, figures
from mnist_lite.training.augmentations import REGISTRY, TrainingAugmentation, mean_abs_difference
from mnist_lite.training.data_source import to_unit_range
from mnist_lite.training.datamodule import MNISTDataModule

from helpers import CPU, TINY, fails, fit_args

# Mean absolute pixel difference of each showcase transform on training image 0 (the seed's reference image).
# The seed measured rotations 17-20%, flips 18%, affine 16%, brightness 2.1%, contrast 1.7%, blur 1.9%.
BANDS = {
    "original": (0.0, 0.0),
    "rotation_30": (0.15, 0.19),
    "rotation_45": (0.18, 0.22),
    "hflip": (0.16, 0.20),
    "vflip": (0.16, 0.20),
    "affine": (0.15, 0.19),
    "brightness": (0.017, 0.025),
    "contrast": (0.013, 0.021),
    "gaussian_blur": (0.015, 0.023),
}


@pytest.fixture(scope="module")
def reference(data_dir: Path) -> torch.Tensor:
    images, _ = data_source.load(data_dir, train=True)
    return to_unit_range(images[:1])[0]  # (1, 28, 28) in [0, 1]


@pytest.fixture(scope="module")
def batch(data_dir: Path) -> torch.Tensor:
    images, _ = data_source.load(data_dir, train=True)
    return to_unit_range(images[:32])


def test_registry_holds_the_nine() -> None:
    assert list(REGISTRY) == list(BANDS)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_showcase_keeps_shape_dtype_and_range(name: str, reference: torch.Tensor) -> None:
    out = REGISTRY[name].showcase(reference)
    assert out.shape == (1, 28, 28) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", list(REGISTRY))
def test_showcase_difference_is_in_its_band(name: str, reference: torch.Tensor) -> None:
    low, high = BANDS[name]
    difference = mean_abs_difference(REGISTRY[name].showcase(reference), reference)
    assert low <= difference <= high
    if name != "original":
        assert difference > 0


@pytest.mark.parametrize("name", list(REGISTRY))
def test_random_version_keeps_shape_dtype_and_range(name: str, batch: torch.Tensor) -> None:
    out = REGISTRY[name].random(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", [n for n in REGISTRY if n != "original"])
def test_random_version_varies_per_sample_and_repeats_per_seed(name: str, reference: torch.Tensor) -> None:
    same = reference.expand(16, 1, 28, 28)  # one image 16 times: any difference is the parameters'
    first = REGISTRY[name].random(same, torch.Generator().manual_seed(7))
    again = REGISTRY[name].random(same, torch.Generator().manual_seed(7))
    other = REGISTRY[name].random(same, torch.Generator().manual_seed(8))
    distinct = {tuple(image.flatten().tolist()) for image in first}
    assert len(distinct) > 1
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_random_version_works_on_the_images_device(name: str) -> None:
    """Training augments batches after they reach the accelerator. No GPU in CI: a batch on the meta device fails
    the same way a CUDA one did (a grid or mask left on the CPU)."""
    out = REGISTRY[name].random(torch.zeros(4, 1, 28, 28, device="meta"), torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (4, 1, 28, 28)


def test_chain_rejects_unknown_names_and_parameters() -> None:
    with pytest.raises(UserError, match="unknown augmentation 'zoom'"):
        TrainingAugmentation({"zoom": {}})
    with pytest.raises(UserError, match="'affine' has no parameter angle: it takes degrees, translate, scale, shear"):
        TrainingAugmentation({"affine": {"angle": 3}})


@pytest.mark.filterwarnings("ignore:The `srun` command is available")  # a bare Trainer on a machine with SLURM
def test_only_training_batches_are_augmented(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(data_dir), augment={"affine": {}, "brightness": None})
    dm.trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    images, labels = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8), torch.arange(8)
    for stage in ("validating", "testing", "predicting"):
        setattr(dm.trainer, stage, True)
        assert torch.equal(dm.on_after_batch_transfer((images, labels), 0)[0], to_unit_range(images))
    dm.trainer.training = True
    assert not torch.equal(dm.on_after_batch_transfer((images, labels), 0)[0], to_unit_range(images))


def test_grid_has_nine_captioned_panels(reference: torch.Tensor) -> None:
    """Each augmentation's showcase, under a caption of its name and difference (one picture: figures.py says why)."""
    fig = figures.augmentation_grid(reference, 5, 0, list(REGISTRY))
    (ax,) = fig.axes
    picture = torch.as_tensor(ax.images[0].get_array())
    assert [text.get_text().split("\n")[0] for text in ax.texts] == list(REGISTRY)
    for text, (name, augmentation) in zip(ax.texts, REGISTRY.items()):
        assert text.get_text().endswith("% diff"), name
        x, y = text.get_position()  # the caption sits centred just above its digit
        left, top = int(x) - 14, int(y) + 1
        assert torch.allclose(picture[top : top + 28, left : left + 28], augmentation.showcase(reference).squeeze())
    assert fig.get_suptitle() == "Training image 0: digit 5"


def test_augment_command_writes_a_png(in_tmp: Path, data_dir: Path, capsys) -> None:
    main(["augment", "--index", "3", "--output", "grid.png", f"--data_dir={data_dir}"])
    assert capsys.readouterr().out.strip() == "Wrote grid.png"
    height, width, _ = matplotlib.image.imread(in_tmp / "grid.png").shape
    assert height > 500 and width > 500
    main(["augment", "--random", "--samples", "3", "--output", "random.png", f"--data_dir={data_dir}"])
    assert (in_tmp / "random.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--index", "60000"], "--index 60000 is out of range"),
        (["--index", "-1"], "-1 does not conform to restriction v>=0"),
        (["--index", "two"], "index: 'two' is not a NonNegativeInt"),
        (["--names", "affine", "zoom"], "unknown augmentation 'zoom'"),
        (["--random", "--samples", "100000"], "--samples 100000: at most 32 draws per augmentation"),
        (["--output", "grid.pgf"], "cannot write grid.pgf: name a .png, .pdf or .svg file."),
    ],
    ids=["out-of-range", "negative", "not-a-number", "unknown-name", "samples-past-a-picture", "format-not-drawn"],
)
def test_augment_command_bad_input(args, expected, in_tmp: Path, data_dir: Path, capsys) -> None:
    err = fails(["augment", *args, f"--data_dir={data_dir}"], capsys)
    assert expected in err
    assert not list(in_tmp.glob("*.png"))


def test_fit_with_augmentations_runs_through_the_cli(in_tmp: Path, data_dir: Path) -> None:
    main(fit_args(TINY, data_dir, "--config", str(CPU.parent / "augmented.yaml")))
    config = (in_tmp / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "gaussian_blur" in config
    assert (in_tmp / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
