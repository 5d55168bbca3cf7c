"""The nine augmentations: one registry of showcase transforms and their batched training-time counterparts.

Each entry pairs a deterministic ``showcase`` transform (torchvision.transforms.v2.functional, used for the
picture and the tests) with a ``random`` version that gives every image of a batch its own parameters.
The random versions are written here because torchvision's v2 transforms draw one set of parameters per call:
per-sample parameters would mean one call per image, about 10 s per epoch of 60k images on 2 cores, against
about 1 s for one batched ``affine_grid``/``grid_sample`` (benchmarks/augmentation.py).

All functions take and return float images in [0, 1] shaped (N, 1, 28, 28) (showcase ones also (1, 28, 28)).
The random parameters are drawn on the CPU, from the CPU generator, and moved to the images' device: a batch on
a GPU gets the same draws as on the CPU.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Generator, Tensor
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from mnist_lite.errors import UserError

Range = tuple[float, float]


def _uniform(n: int, low: float, high: float, generator: Generator | None) -> Tensor:
    return torch.empty(n).uniform_(low, high, generator=generator)


def _symmetric(n: int, bound: float, generator: Generator | None) -> Tensor:
    return _uniform(n, -bound, bound, generator)


def warp(x: Tensor, degrees: Tensor, translate: Tensor, scale: Tensor, shear: Tensor) -> Tensor:
    """One ``grid_sample`` for the whole batch, each image with its own rotation, shift, scale and shear."""
    a, s = torch.deg2rad(-degrees), torch.deg2rad(shear)  # positive turns counter-clockwise, as TF.rotate
    # Forward map: rotate, then shear along x, then scale (translation is in [-1, 1] grid units).
    forward = torch.stack(
        [
            torch.stack([torch.cos(a), -torch.sin(a + s)], -1),
            torch.stack([torch.sin(a), torch.cos(a + s)], -1),
        ],
        -2,
    ) * scale.view(-1, 1, 1)
    inverse = torch.linalg.inv(forward)  # affine_grid maps output pixels back to input pixels
    theta = torch.cat([inverse, -(inverse @ translate.unsqueeze(-1))], -1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def random_rotation(x: Tensor, generator: Generator | None = None, degrees: float = 30.0) -> Tensor:
    n = len(x)
    zeros = torch.zeros(n)
    return warp(x, _symmetric(n, degrees, generator), torch.zeros(n, 2), torch.ones(n), zeros)


def random_affine(
    x: Tensor,
    generator: Generator | None = None,
    degrees: float = 15.0,
    translate: float = 0.1,
    scale: Range = (0.9, 1.1),
    shear: float = 10.0,
) -> Tensor:
    n = len(x)
    shift = _symmetric(2 * n, 2 * translate, generator).view(n, 2)  # a fraction of the size is 2x in grid units
    return warp(
        x,
        _symmetric(n, degrees, generator),
        shift,
        _uniform(n, *scale, generator),
        _symmetric(n, shear, generator),
    )


def _random_flip(x: Tensor, generator: Generator | None, p: float, dim: int) -> Tensor:
    flip = torch.rand(len(x), generator=generator) < p
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(dim), x)


def random_hflip(x: Tensor, generator: Generator | None = None, p: float = 0.5) -> Tensor:
    return _random_flip(x, generator, p, -1)


def random_vflip(x: Tensor, generator: Generator | None = None, p: float = 0.5) -> Tensor:
    return _random_flip(x, generator, p, -2)


def random_brightness(x: Tensor, generator: Generator | None = None, factor: Range = (0.5, 1.5)) -> Tensor:
    return (x * _uniform(len(x), *factor, generator).view(-1, 1, 1, 1).to(x.device)).clamp_(0, 1)


def random_contrast(x: Tensor, generator: Generator | None = None, factor: Range = (0.5, 1.5)) -> Tensor:
    f = _uniform(len(x), *factor, generator).view(-1, 1, 1, 1).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # as TF.adjust_contrast blends with the grey mean
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def random_gaussian_blur(x: Tensor, generator: Generator | None = None, sigma: Range = (0.1, 1.0)) -> Tensor:
    n = len(x)
    s = _uniform(n, *sigma, generator).view(n, 1)
    taps = torch.exp(-torch.tensor([-1.0, 0.0, 1.0]).square() / (2 * s.square()))
    taps = taps / taps.sum(1, keepdim=True)
    kernels = (taps.unsqueeze(2) * taps.unsqueeze(1)).unsqueeze(1)  # (N, 1, 3, 3), one per image
    padded = F.pad(x.view(1, n, 28, 28), (1, 1, 1, 1), mode="reflect")  # as TF.gaussian_blur pads
    return F.conv2d(padded, kernels.to(x.device), groups=n).view_as(x)


@dataclass(frozen=True)
class Augmentation:
    showcase: Callable[[Tensor], Tensor]
    random: Callable[..., Tensor]
    label_preserving: bool = True
    params: dict[str, Any] = field(default_factory=dict)  # the random version's defaults, for its docs

    def __post_init__(self) -> None:
        signature = inspect.signature(self.random).parameters
        object.__setattr__(self, "params", {k: p.default for k, p in signature.items() if k not in ("x", "generator")})


# A shift of 10% of 28 px, as RandomAffine(translate=(0.1, 0.1)) would make it.
_SHIFT = 0.1 * 28

REGISTRY: dict[str, Augmentation] = {
    "original": Augmentation(lambda x: x, lambda x, generator=None: x),
    "rotation_30": Augmentation(lambda x: TF.rotate(x, 30), random_rotation),
    "rotation_45": Augmentation(
        lambda x: TF.rotate(x, 45), lambda x, generator=None, degrees=45.0: random_rotation(x, generator, degrees)
    ),
    "hflip": Augmentation(TF.horizontal_flip, random_hflip, label_preserving=False),
    "vflip": Augmentation(TF.vertical_flip, random_vflip, label_preserving=False),
    "affine": Augmentation(
        lambda x: TF.affine(x, angle=15, translate=[_SHIFT, _SHIFT], scale=0.9, shear=[10.0, 0.0]), random_affine
    ),
    "brightness": Augmentation(lambda x: TF.adjust_brightness(x, 1.5), random_brightness),
    "contrast": Augmentation(lambda x: TF.adjust_contrast(x, 1.5), random_contrast),
    "gaussian_blur": Augmentation(lambda x: TF.gaussian_blur(x, [3, 3], [0.5, 0.5]), random_gaussian_blur),
}


def mean_abs_difference(augmented: Tensor, original: Tensor) -> float:
    """Mean absolute pixel difference, as a fraction of the [0, 1] range."""
    return (augmented - original).abs().mean().item()


class TrainingAugmentation:
    """A chain of random augmentations chosen by name, each with its own parameters, applied to whole batches."""

    def __init__(self, config: dict[str, dict[str, Any] | None]) -> None:
        self.steps = []
        for name, params in config.items():
            if name not in REGISTRY:
                raise UserError(f"unknown augmentation {name!r}: choose from {', '.join(REGISTRY)}.")
            entry, params = REGISTRY[name], params or {}
            unknown = set(params) - set(entry.params)
            if unknown:
                accepted = ", ".join(entry.params) or "no parameters"
                raise UserError(
                    f"augmentation {name!r} has no parameter {', '.join(sorted(unknown))}: it takes {accepted}."
                )
            self.steps.append((entry.random, params))

    def __call__(self, x: Tensor, generator: Generator | None = None) -> Tensor:
        for random, params in self.steps:
            x = random(x, generator, **params)
        return x
