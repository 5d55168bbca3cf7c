"""Pictures drawn with matplotlib (headless Agg): each function returns a Figure; ``save`` writes it."""

from pathlib import Path

import matplotlib

matplotlib.use("agg")  # headless: the CLI and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mnist_lite.augmentations import REGISTRY, mean_abs_difference  # noqa: E402
from mnist_lite.errors import UserError  # noqa: E402


def augmentation_grid(image: torch.Tensor, label: int, index: int, names: list[str]) -> Figure:
    """The showcase transform of each named augmentation on one image, titled with its difference."""
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False, layout="constrained")
    for ax, name in zip(axes.flat, names):
        augmented = REGISTRY[name].showcase(image)
        _show(ax, augmented, f"{name}\n{mean_abs_difference(augmented, image):.1%} diff")
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"Training image {index}: digit {label}")
    return fig


def random_augmentation_grid(
    image: torch.Tensor, label: int, index: int, names: list[str], samples: int, seed: int
) -> Figure:
    """A row per augmentation: ``samples`` draws of its training-time random version."""
    generator = torch.Generator().manual_seed(seed)
    batch = image.expand(samples, 1, 28, 28)
    fig, axes = plt.subplots(
        len(names), samples, figsize=(1.9 * samples, 2.1 * len(names)), squeeze=False, layout="constrained"
    )
    for row, name in zip(axes, names):
        augmented = REGISTRY[name].random(batch, generator)
        for ax, sample in zip(row, augmented):
            _show(ax, sample, f"{name}\n{mean_abs_difference(sample, image):.1%} diff")
    fig.suptitle(f"Training image {index}: digit {label}, random training-time versions (seed {seed})")
    return fig


def _show(ax: plt.Axes, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.squeeze().numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist.")
    try:
        fig.savefig(path, dpi=120)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}.") from None
    finally:
        plt.close(fig)
    return path
