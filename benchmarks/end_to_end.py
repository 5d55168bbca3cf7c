"""The whole `mnist-lite fit --config configs/cpu.yaml` process against the seed's pipeline, in the same run.

The command is the README's, as people run it: progress bar on, drawing on a terminal (a pseudo-terminal here).
Each command runs under /usr/bin/time -v, alternated and repeated; reports median wall time, the ratio
(goal <= 0.6) and the peak resident memory of each. --before SRC adds the same command run on the code of
another checkout (PYTHONPATH=SRC), alternated with the rest, for a before/after.

    python benchmarks/end_to_end.py [--repeats 3] [--before ../old-checkout/src]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from common import CPU, ROOT, median, prepared_workdir, pseudo_terminal

COMMANDS = {
    "mnist-lite fit --config configs/cpu.yaml": [
        shutil.which("mnist-lite") or "mnist-lite",
        "fit",
        "--config",
        CPU,
    ],
    "seed pipeline (benchmarks/seed_pipeline.py)": [sys.executable, str(ROOT / "benchmarks" / "seed_pipeline.py")],
}


def measure(command: list[str], workdir: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of one run, in a folder that already holds the extracted data."""
    stats = workdir / "time.txt"
    with pseudo_terminal() as terminal:
        subprocess.run(
            ["/usr/bin/time", "-v", "-o", str(stats), *command],
            cwd=workdir,
            stdout=terminal,
            stderr=terminal,
            check=True,
            env=env,
        )
    report = stats.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", report)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", help="the src/ folder of another checkout, to run the same command on")
    args = parser.parse_args()
    workdir = prepared_workdir("mnist-lite-e2e-")
    commands = {name: (command, None) for name, command in COMMANDS.items()}
    if args.before:
        ours = next(iter(COMMANDS))
        env = {**os.environ, "PYTHONPATH": args.before}
        commands[f"{ours}, code of {args.before}"] = (COMMANDS[ours], env)
    runs = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, (command, env) in commands.items():
            runs[name].append(measure(command, workdir, env))
    print("| command | median wall s | runs (s) | median peak RSS MiB |\n| --- | --- | --- | --- |")
    for name, results in runs.items():
        walls = [w for w, _ in results]
        print(
            f"| {name} | {median(walls):.2f} | {', '.join(f'{w:.2f}' for w in walls)} "
            f"| {median([r for _, r in results]):.0f} |"
        )
    ours, seed = (runs[name] for name in COMMANDS)  # the first two
    ratios = [a[0] / b[0] for a, b in zip(ours, seed)]
    print(f"\nmedian wall-time ratio mnist-lite/seed: {median(ratios):.2f} (goal <= 0.6)")


if __name__ == "__main__":
    main()
