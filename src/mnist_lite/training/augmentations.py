"""The nine augmentations: each one batched function that gives every image its own random parameters, drawn on the
CPU generator (the same draws on any device); the picture draws each at fixed parameters. Not torchvision's v2 (one
set of parameters per call) nor kornia's (slower): docs/architecture.md. Images are float in [0, 1], (N, 1, 28, 28)."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Generator, Tensor
from torch.nn import functional as F

from mnist_lite.errors import UserError

Range = tuple[float, float]


def _draw(n: int, bounds: float | Range, generator: Generator | None) -> Tensor:
    """``n`` values from U(low, high); one number ``b`` means U(-b, b)."""
    low, high = (-bounds, bounds) if isinstance(bounds, int | float) else bounds
    return torch.empty(n).uniform_(low, high, generator=generator)


def warp(x: Tensor, degrees: Tensor, translate: Tensor, scale: Tensor, shear: Tensor) -> Tensor:
    """One ``grid_sample`` for the whole batch, each image with its own rotation, shift, scale and shear."""
    a, s = torch.deg2rad(-degrees), torch.deg2rad(shear)  # positive turns counter-clockwise, as TF.rotate
    # Forward map: rotate, then shear along x, then scale (translation is in [-1, 1] grid units).
    rows = [torch.stack([torch.cos(a), -torch.sin(a + s)], -1), torch.stack([torch.sin(a), torch.cos(a + s)], -1)]
    inverse = torch.linalg.inv(torch.stack(rows, -2) * scale.view(-1, 1, 1))  # affine_grid maps output to input
    theta = torch.cat([inverse, -(inverse @ translate.unsqueeze(-1))], -1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def random_affine(
    x: Tensor,
    generator: Generator | None = None,
    degrees: float | Range = 15.0,
    translate: float | Range = 0.1,
    scale: Range = (0.9, 1.1),
    shear: float | Range = 10.0,
) -> Tensor:
    n = len(x)
    angle = _draw(n, degrees, generator)
    shift = 2 * _draw(2 * n, translate, generator).view(n, 2)  # a fraction of the size is 2x in grid units
    return warp(x, angle, shift, _draw(n, scale, generator), _draw(n, shear, generator))


def random_rotation(x: Tensor, generator: Generator | None = None, degrees: float | Range = 30.0) -> Tensor:
    return random_affine(x, generator, degrees, 0.0, (1.0, 1.0), 0.0)


def _random_flip(x: Tensor, generator: Generator | None, p: float, dim: int) -> Tensor:
    flip = torch.rand(len(x), generator=generator) < p
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(dim), x)


def _factors(x: Tensor, factor: Range, generator: Generator | None) -> Tensor:
    return _draw(len(x), factor, generator).view(-1, 1, 1, 1).to(x.device)


def random_brightness(x: Tensor, generator: Generator | None = None, factor: Range = (0.5, 1.5)) -> Tensor:
    return (x * _factors(x, factor, generator)).clamp_(0, 1)


def random_contrast(x: Tensor, generator: Generator | None = None, factor: Range = (0.5, 1.5)) -> Tensor:
    f, mean = _factors(x, factor, generator), x.mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1 - f) * mean).clamp_(0, 1)  # as TF.adjust_contrast, a blend with the grey mean


def random_gaussian_blur(x: Tensor, generator: Generator | None = None, sigma: Range = (0.1, 1.0)) -> Tensor:
    n = len(x)
    taps = torch.exp(-torch.tensor([-1.0, 0.0, 1.0]).square() / (2 * _draw(n, sigma, generator).view(n, 1) ** 2))
    taps = taps / taps.sum(1, keepdim=True)
    kernels = (taps.unsqueeze(2) * taps.unsqueeze(1)).unsqueeze(1)  # (N, 1, 3, 3), one per image
    padded = F.pad(x.view(1, n, 28, 28), (1, 1, 1, 1), mode="reflect")  # as TF.gaussian_blur pads
    return F.conv2d(padded, kernels.to(x.device), groups=n).view_as(x)


@dataclass(frozen=True)
class Augmentation:
    random: Callable[..., Tensor]
    shown: dict[str, Any]  # the picture's parameters

    @property
    def params(self) -> dict[str, Any]:
        signature = inspect.signature(self.random).parameters.items()
        return {k: p.default for k, p in signature if k not in ("x", "generator")}

    def showcase(self, image: Tensor) -> Tensor:
        """At the picture's parameters, on one image (1, 28, 28); a generator of its own leaves the global one be."""
        return self.random(image[None], torch.Generator(), **self.shown)[0]


REGISTRY: dict[str, Augmentation] = {
    "original": Augmentation(lambda x, generator=None: x, {}),
    "rotation_30": Augmentation(random_rotation, {"degrees": (30, 30)}),
    "rotation_45": Augmentation(partial(random_rotation, degrees=45.0), {"degrees": (45, 45)}),
    "hflip": Augmentation(lambda x, generator=None, p=0.5: _random_flip(x, generator, p, -1), {"p": 1}),
    "vflip": Augmentation(lambda x, generator=None, p=0.5: _random_flip(x, generator, p, -2), {"p": 1}),
    "affine": Augmentation(  # turned 15 degrees clockwise, as the assignment's picture (torchvision's affine) was
        random_affine, {"degrees": (-15, -15), "translate": (0.1, 0.1), "scale": (0.9, 0.9), "shear": (10, 10)}
    ),
    "brightness": Augmentation(random_brightness, {"factor": (1.5, 1.5)}),
    "contrast": Augmentation(random_contrast, {"factor": (1.5, 1.5)}),
    "gaussian_blur": Augmentation(random_gaussian_blur, {"sigma": (0.5, 0.5)}),
}


def mean_abs_difference(augmented: Tensor, original: Tensor) -> float:
    return (augmented - original).abs().mean().item()


class TrainingAugmentation:
    """A chain of random augmentations chosen by name, each with its own parameters, applied to whole batches."""

    def __init__(self, config: dict[str, dict[str, Any] | None]) -> None:
        self.steps = []
        for name, params in config.items():
            if name not in REGISTRY:
                raise UserError(f"unknown augmentation {name!r}: choose from {', '.join(REGISTRY)}.")
            entry, params = REGISTRY[name], params or {}
            if unknown := set(params) - set(entry.params):
                accepted = ", ".join(entry.params) or "no parameters"
                raise UserError(
                    f"augmentation {name!r} has no parameter {', '.join(sorted(unknown))}: it takes {accepted}."
                )
            self.steps.append((entry.random, params))

    def __call__(self, x: Tensor, generator: Generator | None = None) -> Tensor:
        for random, params in self.steps:
            x = random(x, generator, **params)
        return x
