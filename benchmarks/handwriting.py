"""Accuracy on people's handwriting, not MNIST's (examples/handwriting/): `mnist-lite predict` on the 1,797 files
examples/handwriting/make.py draws, for each checkpoint given, overall and by size, stroke, polarity and format.

    python benchmarks/handwriting.py CKPT [CKPT ...] [--json out.json]
"""

import csv
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from common import ROOT, arguments, recorded

sys.path.insert(0, str(ROOT / "examples" / "handwriting"))
import make


def score(ckpt: Path, folder: Path) -> dict[str, float]:
    """predict's accuracy on the set, overall and for each kind of file."""
    out = folder.parent / f"{ckpt.stem}-{abs(hash(str(ckpt)))}.csv"
    command = [sys.executable, "-m", "mnist_lite", "predict", "--ckpt_path", str(ckpt), "--data.predict_path"]
    command += [str(folder), f"--predictions.output={out}", "--trainer.enable_progress_bar=false"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    right: dict[str, list[bool]] = defaultdict(list)
    with open(out, newline="") as f:
        for row in csv.DictReader(f):
            name = Path(row["path"]).name
            size, stroke, dark_on_light, ext = make.variant(int(name.split("_")[1].split(".")[0]))
            correct = row["prediction"] == name[0]
            for key in ("all", f"{size} px", stroke, "dark on light" if dark_on_light else "light on dark", ext):
                right[key].append(correct)
    return {key: sum(hits) / len(hits) for key, hits in right.items()}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("ckpts", type=Path, nargs="+")
    parser.add_argument("--limit", type=int, help="only the set's first LIMIT digits")
    args = parser.parse_args()
    with recorded(args.json, "handwriting"):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "set"
            make.main(folder, args.limit)
            results = {str(ckpt): score(ckpt, folder) for ckpt in args.ckpts}
        keys = ["all", *(f"{s} px" for s in make.SIZES), *make.STROKES, "dark on light", "light on dark", "png", "jpg"]
        print("| checkpoint | " + " | ".join(keys) + " |\n|" + " --- |" * (len(keys) + 1))
        for ckpt, accuracy in results.items():
            print(f"| {ckpt} | " + " | ".join(f"{accuracy[k]:.1%}" if k in accuracy else "" for k in keys) + " |")


if __name__ == "__main__":
    main()
