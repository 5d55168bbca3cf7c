"""Draw the 1,797 handwritten digits of optdigits.csv.gz (README.md) as people's image files, into a folder.

Each digit's 8x8 ink counts are its 32x32 scan at a quarter of the resolution: brought back to a size (32, 64, 128
or 256 px, by bicubic resizing), its strokes left as they are, thinned or thickened, written dark on light or
light on dark, as PNG or JPEG. The choices cycle with the row number, so every kind is there and the set is the
same on every run. A file is named <digit>_<row>.<ext>.

    python examples/handwriting/make.py FOLDER
"""

import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

SOURCE = Path(__file__).with_name("optdigits.csv.gz")
SIZES = (32, 64, 128, 256)
STROKES = ("as written", "thinner", "thicker")


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 images in [0, 1] and their digits."""
    with gzip.open(SOURCE, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return rows[:, :64].reshape(-1, 8, 8) / 16, rows[:, 64].astype(int)


def variant(row: int) -> tuple[int, str, bool, str]:
    """Row ``row``'s size, stroke, polarity (True: dark ink on light paper) and file format."""
    return SIZES[row % 4], STROKES[row // 4 % 3], row // 12 % 2 == 0, ("png", "jpg")[row // 24 % 2]


def draw(image: np.ndarray, size: int, stroke: str, dark_on_light: bool) -> np.ndarray:
    """An 8x8 image of ink counts as a size x size greyscale picture (uint8)."""
    ink = F.interpolate(torch.from_numpy(image)[None, None], size=(size, size), mode="bicubic", align_corners=False)
    width = max(3, size // 16) | 1  # about a twelfth of the digit's height, as a pen's width changes it
    if stroke == "thicker":
        ink = F.max_pool2d(ink, width, stride=1, padding=width // 2)
    elif stroke == "thinner":
        ink = -F.max_pool2d(-ink, width, stride=1, padding=width // 2)
    pixels = ink[0, 0].clamp(0, 1).numpy()
    return ((1 - pixels if dark_on_light else pixels) * 255).round().astype(np.uint8)


def main(folder: Path, limit: int | None = None) -> None:
    """Writes the set's images into folder, or its first `limit`."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = digits()
    images, labels = images[:limit], labels[:limit]
    for row, (image, label) in enumerate(zip(images, labels)):
        size, stroke, dark_on_light, ext = variant(row)
        Image.fromarray(draw(image, size, stroke, dark_on_light)).save(folder / f"{label}_{row:04d}.{ext}", quality=90)
    print(f"Wrote {len(labels)} digits to {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
