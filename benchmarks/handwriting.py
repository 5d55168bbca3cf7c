"""Accuracy on people's handwriting, not MNIST's (examples/handwriting/): `mnist-lite predict` on the 1,797 files
examples/handwriting/make.py draws, for each checkpoint given, overall and by size, stroke, polarity and format.

    python benchmarks/handwriting.py CKPT [CKPT ...] [--json out.json]

With --finetune, what teaching it your own digits gains (docs/own-digits.md): the set split in half by a fixed seed,
configs/one_epoch.yaml fitted by the CLI, then fine-tuned on one half with configs/finetune.yaml, each model scored
on the other half and on MNIST's test set.

    python benchmarks/handwriting.py --finetune [--seeds 0 1 2] [--json out.json] [any fit option, --key=value]
"""

import csv
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from common import CPU, ROOT, arguments, parse_with_fit_options, recorded

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


ONE_EPOCH = ["--config", CPU, "--config", str(ROOT / "configs" / "one_epoch.yaml")]
FINETUNE = [*ONE_EPOCH, "--config", str(ROOT / "configs" / "finetune.yaml")]


def split(folder: Path, seed: int) -> tuple[Path, Path]:
    """Half the files by a seeded permutation, laid out for data.own_digits (a subfolder per digit); the rest."""
    names = sorted(folder.iterdir())
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    tune, held_out = folder.parent / "tune", folder.parent / "held_out"
    for rank, i in enumerate(order):
        target = tune / names[i].name[0] if rank < len(names) // 2 else held_out
        target.mkdir(parents=True, exist_ok=True)
        names[i].rename(target / names[i].name)
    return tune, held_out


def mnist_lite(cwd: Path, *args: str) -> Path:
    """Runs a subcommand in cwd; the run folder it names."""
    command = [sys.executable, "-m", "mnist_lite", *args, "--trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    folder = next(line for line in done.stdout.splitlines() if line.startswith("Run folder: "))
    return cwd / folder.removeprefix("Run folder: ")


def mnist_test_acc(cwd: Path, ckpt: Path, fit: list[str]) -> float:
    run = mnist_lite(cwd, "test", "--ckpt_path", str(ckpt), *fit)
    with open(run / "metrics.csv") as f:
        return float(next(row for row in csv.DictReader(f) if row.get("test_acc"))["test_acc"])


def finetune(seeds: list[int], limit: int | None, fit: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        make.main(cwd / "set", limit)
        tune, held_out = split(cwd / "set", seed=0)
        counts = sum(1 for f in tune.rglob("*") if f.is_file()), len(list(held_out.iterdir()))
        print("Fine-tuned on {} of the digits, scored on the other {}.".format(*counts))
        print("\n| model, seed | held-out half of the handwriting | MNIST test set |\n| --- | --- | --- |")
        for seed in seeds:
            fitted = mnist_lite(cwd, "fit", *ONE_EPOCH, f"--seed_everything={seed}", *fit) / "checkpoints" / "last.ckpt"
            mine = [f"--data.own_digits={tune}", f"--trainer.callbacks.init_args.weights={fitted}"]
            tuned = mnist_lite(cwd, "fit", *FINETUNE, f"--seed_everything={seed}", *mine, *fit) / "checkpoints"
            tuned = tuned / "last.ckpt"
            for name, ckpt in (("configs/one_epoch.yaml", fitted), ("then configs/finetune.yaml", tuned)):
                held = score(ckpt, held_out)["all"]
                print(f"| {name}, seed {seed} | {held:.1%} | {mnist_test_acc(cwd, ckpt, fit):.2%} |")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("ckpts", type=Path, nargs="*")
    parser.add_argument("--limit", type=int, help="only the set's first LIMIT digits")
    parser.add_argument("--finetune", action="store_true", help="fine-tune on one half, score on the other")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parse_with_fit_options(parser)
    if args.finetune:
        with recorded(args.json, "handwriting-finetune"):
            finetune(args.seeds, args.limit, args.fit)
        return
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
