"""Render MNIST test digits the way people make digit images, for trying `mnist-lite predict`.

Each file is named after the digit it shows. Run from the repository root:
    python examples/make_samples.py
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from mnist_lite.training import data_source

OUT = Path(__file__).parent / "digits"


def render(digit: torch.Tensor, height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 28x28 digit scaled into ``box`` = (top, left, box height, box width) of a blank canvas, light ink."""
    top, left, h, w = box
    scaled = F.interpolate(digit[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    canvas = torch.zeros(height, width)
    canvas[top : top + h, left : left + w] = scaled
    return canvas.clamp(0, 255).round().to(torch.uint8).numpy()


def main() -> None:
    data_source.prepare("data")
    images, labels = data_source.load("data", train=False)
    OUT.mkdir(exist_ok=True)
    d = {i: (images[i], int(labels[i])) for i in range(12)}

    ink, label = d[0]  # dark pencil on light paper, off-centre, tall
    Image.fromarray(255 - render(ink, 160, 120, (15, 50, 80, 60))).save(OUT / f"{label}_dark_on_light_120x160.png")
    ink, label = d[1]  # MNIST polarity, small square JPEG
    Image.fromarray(render(ink, 64, 64, (4, 10, 44, 44))).save(OUT / f"{label}_light_on_dark_64x64.jpg", quality=90)
    ink, label = d[2]  # black ink on a transparent background
    alpha = render(ink, 90, 90, (20, 10, 60, 60))
    rgba = np.stack([np.zeros_like(alpha)] * 3 + [alpha], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(OUT / f"{label}_rgba_transparent_90x90.png")
    ink, label = d[3]  # blue ink on white, wide image, uneven margins
    grey = render(ink, 100, 200, (10, 130, 80, 60)).astype(np.float32) / 255
    rgb = np.stack([1 - grey, 1 - grey, np.ones_like(grey) - 0.2 * grey], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(OUT / f"{label}_blue_on_white_200x100.bmp")
    ink, label = d[4]  # a large greyscale scan with a grey paper tone
    Image.fromarray((230 - render(ink, 220, 300, (30, 40, 170, 170)) * 0.8).astype(np.uint8)).save(
        OUT / f"{label}_grey_scan_300x220.tiff"
    )
    np.save(OUT / f"array_{''.join(str(d[i][1]) for i in range(5, 10))}.npy", images[5:10].numpy())
    # An IDX file, MNIST's own format: magic 0x00000803, count, rows, columns, then the pixels.
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28))
    (OUT / f"idx_{d[10][1]}{d[11][1]}.idx").write_bytes(header + images[10:12].numpy().tobytes())
    print(f"Wrote {len(list(OUT.iterdir()))} files to {OUT}")


if __name__ == "__main__":
    main()
