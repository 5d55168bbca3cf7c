"""``mnist-lite augment``: draw the augmentations of one training image into a PNG."""

from jsonargparse.typing import NonNegativeInt, PositiveInt

from mnist_lite.boundaries.files import printable
from mnist_lite.errors import UserError
from mnist_lite.training import data_source
from mnist_lite.training.augmentations import REGISTRY, TrainingAugmentation

MAX_SAMPLES = 32  # a row of the picture each


def augment(
    index: NonNegativeInt = 0,
    output: str = "augmentations.png",
    names: list[str] | None = None,
    random: bool = False,
    samples: PositiveInt = 4,
    seed: int = 0,
    data_dir: str = "data",
) -> None:
    """Draw the augmentations of one training image into a PNG.

    Args:
        index: which training image (0-59999).
        output: the PNG to write.
        names: augmentations to draw, by name; all nine when not given.
        random: draw the random training-time versions instead of the showcase transforms.
        samples: with --random, draws per augmentation.
        seed: with --random, the seed of the draws.
        data_dir: where MNIST is extracted.
    """
    from mnist_lite.training import figures  # matplotlib: only for the commands that draw

    if samples > MAX_SAMPLES:
        raise UserError(f"--samples {samples}: at most {MAX_SAMPLES} draws per augmentation fit in a picture.")
    names = list(REGISTRY) if names is None else names
    TrainingAugmentation(dict.fromkeys(names))  # each name is one of the nine, or a UserError that lists them
    data_source.prepare(data_dir)
    images, labels = data_source.load(data_dir, train=True)
    if index >= len(labels):
        raise UserError(f"--index {index} is out of range: the training set has images 0-{len(labels) - 1}.")
    image, label = data_source.to_unit_range(images[index : index + 1])[0], int(labels[index])
    if random:
        fig = figures.random_augmentation_grid(image, label, index, names, samples, seed)
    else:
        fig = figures.augmentation_grid(image, label, index, names)
    print(f"Wrote {printable(figures.save(fig, output))}")
