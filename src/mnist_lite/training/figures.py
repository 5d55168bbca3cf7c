"""Pictures drawn into a new matplotlib ``Figure`` each, which ``save`` writes. No pyplot: importing this never touches
matplotlib's backend, in a notebook or anywhere else, and no figure outlives its PNG."""

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from mnist_lite.boundaries import files
from mnist_lite.errors import UserError
from mnist_lite.training.augmentations import REGISTRY, mean_abs_difference


def augmentation_grid(image: torch.Tensor, label: int, index: int, names: list[str]) -> Figure:
    """The showcase transform of each named augmentation on one image, titled with its difference."""
    augmented = [REGISTRY[name].showcase(image) for name in names]
    captions = [f"{name}\n{mean_abs_difference(a, image):.1%} diff" for name, a in zip(names, augmented)]
    return _captioned_grid(f"Training image {index}: digit {label}", augmented, captions, cols=3)


def random_augmentation_grid(
    image: torch.Tensor, label: int, index: int, names: list[str], samples: int, seed: int
) -> Figure:
    """A row per augmentation: ``samples`` draws of its training-time random version."""
    generator = torch.Generator().manual_seed(seed)
    batch = image.expand(samples, 1, 28, 28)
    drawn = [(name, sample) for name in names for sample in REGISTRY[name].random(batch, generator)]
    captions = [f"{name}\n{mean_abs_difference(sample, image):.1%} diff" for name, sample in drawn]
    title = f"Training image {index}: digit {label}, random training-time versions (seed {seed})"
    return _captioned_grid(title, [sample for _, sample in drawn], captions, cols=samples)


def confusion_matrix(matrix: torch.Tensor) -> Figure:
    """Counts of true (rows) against predicted (columns) digits on the test set."""
    fig = _with_margins(Figure(figsize=(7, 6)))
    ax = fig.subplots()
    fig.colorbar(ax.imshow(matrix.numpy(), cmap="Blues"), ax=ax, label="images")
    for (true, predicted), count in np.ndenumerate(matrix.numpy()):
        dark = count > matrix.max().item() / 2
        ax.text(predicted, true, str(count), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    accuracy = matrix.diag().sum().item() / matrix.sum().item()
    title = f"Confusion matrix: {int(matrix.sum())} test images, accuracy {accuracy:.2%}"
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit", title=title)
    return fig


def per_class_accuracy(accuracy: torch.Tensor) -> Figure:
    """Test accuracy per true digit; the axis starts at a round value, said on the axis, not at the lowest bar."""
    fig = _with_margins(Figure(figsize=(7, 4)))
    ax = fig.subplots()
    bars = ax.bar(range(10), accuracy.numpy() * 100, color="tab:blue")
    ax.bar_label(bars, labels=[f"{a:.1%}" for a in accuracy.tolist()], fontsize=8)
    low = max(0, 10 * math.floor((accuracy.min().item() * 100 - 1) / 10))
    ylabel = f"accuracy (%), axis from {low}%" if low else "accuracy (%)"
    ax.set(ylim=(low, 101), xticks=range(10), xlabel="true digit", ylabel=ylabel, title="Test accuracy per digit")
    return fig


def error_grid(confidence: torch.Tensor, images: torch.Tensor, true: torch.Tensor, predicted: torch.Tensor) -> Figure:
    """The most confidently wrong test images, each titled with its true and predicted digit."""
    captions = [
        f"true {t}, predicted {p}\n({conf:.0%} sure)"
        for conf, t, p in zip(confidence.tolist(), true.tolist(), predicted.tolist())
    ]
    title = "Most confidently wrong test images" if len(images) else "No test image was misclassified"
    return _captioned_grid(title, list(images), captions, cols=4)


FORMATS = ("png", "pdf", "svg")  # what matplotlib writes without other programs
SERIES = (  # the metric's name in metrics.csv, with {} for loss or acc; its label; its colour
    ("train_{}", "train, per logged step: raw (faint) and smoothed", "tab:blue"),
    ("train_{}_epoch", "train, epoch mean", "tab:orange"),
    ("val_{}", "validation", "tab:green"),
)


def learning_curves(
    rows: Sequence[Mapping[str, float]], label_smoothing: float = 0.0, resumed_at: Sequence[float] = ()
) -> Figure:
    """Loss and accuracy against the training step, from a run's metrics.csv (and those of the runs it resumed)."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    for ax, metric, title in zip(fig.subplots(1, 2), ("loss", "acc"), ("Loss (cross-entropy)", "Accuracy")):
        for key, label, color in SERIES:
            points = [(row["step"], row[key.format(metric)]) for row in rows if key.format(metric) in row]
            if not points:
                continue
            steps, values = np.array(points).T
            marker = "o" if len(points) < (5 if key == "train_{}" else 30) else None  # a dot per point, when few
            if key == "train_{}" and len(points) >= 5:  # the raw points faint behind their smoothed line
                ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8, marker="." if len(points) < 30 else None)
                values = _smoothed(values)
            ax.plot(steps, values, color=color, label=label, marker=marker)
            if key == "val_{}":
                ax.annotate(f"{values[-1]:.4g}", (steps[-1], values[-1]), textcoords="offset points", xytext=(0, 6))
        for step in resumed_at:
            ax.axvline(step, color="gray", linestyle=":", label="resumed from a checkpoint")
        ax.set(xlabel="training step", title=title)
        ax.grid(alpha=0.3)
    legend = {label: line for ax in fig.axes for line, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=max(1, len(legend)))
    if label_smoothing:
        fig.suptitle(
            f"Training loss includes label smoothing ({label_smoothing:g}), so it sits above the validation "
            "loss by design",
            fontsize=9,
        )
    return fig


def _smoothed(values: np.ndarray) -> np.ndarray:
    """A centred moving average over about a tenth of the points: no lag, and each end averages what it has.
    From cumulative sums: linear in the points, where a convolution with the window grows with their square."""
    half, index = (max(5, len(values) // 10) | 1) // 2, np.arange(len(values))
    low, high = np.maximum(index - half, 0), np.minimum(index + half + 1, len(values))
    sums = np.concatenate([[0.0], np.cumsum(values)])
    return (sums[high] - sums[low]) / (high - low)


def _with_margins(fig: Figure) -> Figure:
    """Fixed margins, in inches, that fit these figures' labels: a layout engine measures every label again."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.65 / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.4 / height)
    return fig


def _captioned_grid(title: str, images: list[torch.Tensor], captions: list[str], cols: int) -> Figure:
    """Digits (pixels in [0, 1]) in rows of ``cols``, each under its two-line caption: one picture of them all on a
    white ground, which matplotlib draws much faster than an axes per digit."""
    side, gap, head = 28, 3, 9  # in image pixels: a digit, the gap between two, the room for a caption
    rows = max(1, math.ceil(len(images) / cols))
    ground = torch.ones(rows * (head + side), cols * (gap + side))
    inch = 2.2 / (gap + side)  # an image pixel, in inches: 2.2 in a column
    width = inch * ground.shape[1] / 0.98
    lines = textwrap.wrap(title, max(20, int(width * 9)))  # about 9 characters of the title to the inch
    above = 0.1 + 0.22 * len(lines)  # inches above the grid, for the title
    height = inch * len(ground) / 0.98 + above
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - above / height))
    for i, (image, caption) in enumerate(zip(images, captions)):
        top, left = (i // cols) * (head + side) + head, (i % cols) * (gap + side) + gap // 2
        ground[top : top + side, left : left + side] = image.squeeze()
        ax.text(left + side / 2, top - 1, caption, ha="center", fontsize=9)
    ax.imshow(ground.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    fig.suptitle("\n".join(lines), y=1 - 0.1 / height, va="top")
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` in the format its suffix says, atomically: never through a link at ``path``, never half-written."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {files.printable(path)}: folder {files.printable(path.parent)} does not exist.")
    if (kind := path.suffix[1:].lower() or "png") not in FORMATS:
        raise UserError(f"cannot write {files.printable(path)}: name a .png, .pdf or .svg file.")
    image = io.BytesIO()
    fig.savefig(image, dpi=120, format=kind)
    try:
        files.write_atomically(image.getbuffer(), path)
    except OSError as e:
        raise UserError(f"cannot write {files.printable(path)}: {e.strerror or e}.") from None
    return path
