"""Cost and benefit of training-time augmentation (configs/augmented.yaml).

1. One training epoch with the augmentations vs without, alternated in the same run: median ratio (goal <= 1.3).
2. Robustness: models trained with and without augmentation for the same epochs, tested on the clean 10k test
   set and on a shifted copy (each image rotated +-20 deg and shifted +-3 px, seeded).

    python benchmarks/augmentation.py [--repeats 3] [--epochs 3] [any mnist-lite fit option, --key=value]

With --kornia, instead: the cost of one 64-image batch through configs/augmented.yaml's chain, today's batched
functions against kornia's AugmentationSequential of the same four, run in turn (kornia is no dependency:
pip install kornia).

    python benchmarks/augmentation.py --kornia [--repeats 15]
"""

import time
from pathlib import Path

import torch
import yaml

from mnist_lite.training.augmentations import TrainingAugmentation, warp
from mnist_lite.training.data_source import to_unit_range

from common import CPU, ROOT, arguments, build, median, parse_with_fit_options, quiet, recorded, timed

AUGMENTED = str(ROOT / "configs" / "augmented.yaml")


def shifted(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Each image rotated by U(-20, 20) degrees and shifted by U(-3, 3) px on each axis."""
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    degrees = torch.empty(n).uniform_(-20, 20, generator=g)
    shift = torch.empty(n, 2).uniform_(-3, 3, generator=g) * (2 / 28)  # pixels to grid units
    return warp(to_unit_range(images), degrees, shift, torch.ones(n), torch.zeros(n))


def accuracy(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Of images already in [0, 1], (N, 1, 28, 28)."""
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat([model(chunk).argmax(1) for chunk in images.split(1000)])
    return (predicted == labels).float().mean().item()


def epoch_seconds(configs: list[str], fit: list[str]) -> float:
    trainer, model, dm = build(*[a for c in configs for a in ("--config", c)], *fit, "--trainer.limit_val_batches=0")
    dm.prepare_data()
    dm.setup("fit")  # load the data before the clock starts
    return timed(lambda: trainer.fit(model, datamodule=dm))


def per_batch_against_kornia(repeats: int, calls: int = 100) -> None:
    import kornia.augmentation as K

    chain = yaml.safe_load(Path(AUGMENTED).read_text())["data"]["augment"]
    affine = chain["affine"]
    ours = TrainingAugmentation(chain)
    theirs = K.AugmentationSequential(
        K.RandomAffine(affine["degrees"], (affine["translate"],) * 2, affine["scale"], affine["shear"], p=1.0),
        K.RandomBrightness(tuple(chain["brightness"]["factor"]), p=1.0),
        K.RandomContrast(tuple(chain["contrast"]["factor"]), p=1.0),
        K.RandomGaussianBlur((3, 3), tuple(chain["gaussian_blur"]["sigma"]), p=1.0),
    )
    batch = torch.rand(64, 1, 28, 28)

    def ms(augment) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            augment(batch)
        return (time.perf_counter() - start) / calls * 1000

    ms(ours), ms(theirs)  # warm
    runs = [(ms(ours), ms(theirs)) for _ in range(repeats)]
    print("| one batch of 64, configs/augmented.yaml | median ms | runs (ms) |\n| --- | --- | --- |")
    for name, times in (("mnist-lite's batched functions", [a for a, _ in runs]), ("kornia", [b for _, b in runs])):
        print(f"| {name} | {median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
    print(f"\nmedian ratio kornia/ours: {median([b / a for a, b in runs]):.2f}")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--kornia", action="store_true", help="only the per-batch cost against kornia's")
    args = parse_with_fit_options(parser)
    if args.kornia:
        with recorded(args.json, "augmentation-kornia"):
            per_batch_against_kornia(args.repeats)
        return
    with recorded(args.json, "augmentation"):
        quiet()

        plain, augmented = [], []
        for _ in range(args.repeats):
            plain.append(epoch_seconds([CPU], args.fit))
            augmented.append(epoch_seconds([CPU, AUGMENTED], args.fit))
        ratios = [a / p for a, p in zip(augmented, plain)]
        print("| one epoch | median s | runs (s) |\n| --- | --- | --- |")
        print(f"| without augmentation | {median(plain):.2f} | {', '.join(f'{t:.2f}' for t in plain)} |")
        print(f"| with configs/augmented.yaml | {median(augmented):.2f} | {', '.join(f'{t:.2f}' for t in augmented)} |")
        print(f"\nmedian ratio with/without: {median(ratios):.2f} (goal <= 1.3)\n")

        print(f"| trained {args.epochs} epochs, seed 0 | clean test | shifted test (+-20 deg, +-3 px) |")
        print("| --- | --- | --- |")
        for name, configs in (("without augmentation", [CPU]), ("with configs/augmented.yaml", [CPU, AUGMENTED])):
            extra = [a for c in configs for a in ("--config", c)]
            trainer, model, dm = build(*extra, f"--trainer.max_epochs={args.epochs}", *args.fit)
            trainer.fit(model, datamodule=dm)
            dm.setup("test")
            images, labels = dm.splits["test"].images, dm.splits["test"].labels
            moved = shifted(images)
            clean = accuracy(model, to_unit_range(images), labels)
            robust = accuracy(model, moved, labels)
            print(f"| {name} | {clean:.2%} | {robust:.2%} |")


if __name__ == "__main__":
    main()
