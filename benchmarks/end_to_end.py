"""Whole `mnist-lite fit` processes side by side: configs/cpu.yaml, configs/one_epoch.yaml on it, and the assignment's
pipeline (benchmarks/assignment_pipeline.py), in the same run.

The commands are the README's, as people run them: progress bar on, drawing on a terminal (a pseudo-terminal
here). Each runs under /usr/bin/time -v, alternated and repeated; reports each one's median wall time, its ratio
to configs/cpu.yaml's run by run, and its peak resident memory. --before SRC adds configs/cpu.yaml's command run
on the code of another checkout (PYTHONPATH=SRC); --also CONFIG adds configs/cpu.yaml stacked with CONFIG.

    python benchmarks/end_to_end.py [--repeats 3] [--before ../old-checkout/src] [--also configs/under_8k.yaml]

Any mnist-lite fit option (--key=value) is added to the mnist-lite commands.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from common import CPU, ROOT, arguments, median, parse_with_fit_options, prepared_workdir, pseudo_terminal, recorded

FIT = [shutil.which("mnist-lite") or "mnist-lite", "fit", "--config", CPU]
COMMANDS: dict[str, list[str]] = {
    "mnist-lite fit --config configs/cpu.yaml": FIT,
    "... --config configs/one_epoch.yaml": [*FIT, "--config", str(ROOT / "configs" / "one_epoch.yaml")],
    "assignment pipeline (benchmarks/assignment_pipeline.py)": [
        sys.executable,
        str(ROOT / "benchmarks" / "assignment_pipeline.py"),
    ],
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
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    assert wall and rss, report
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    return hours * 3600 + minutes * 60 + seconds, int(rss.group(1)) / 1024


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", help="the src/ folder of another checkout, to run configs/cpu.yaml's fit on")
    parser.add_argument("--only", nargs="+", type=int, help="run only these commands, by their place (0, 1, 2)")
    parser.add_argument("--also", action="append", default=[], help="another config to stack on configs/cpu.yaml")
    args = parse_with_fit_options(parser)
    with recorded(args.json, "end_to_end"):
        workdir = prepared_workdir("mnist-lite-e2e-")
        ours = {n: [*c, *args.fit] if c[:2] == FIT[:2] else c for n, c in COMMANDS.items()}
        for config in args.also:
            ours[f"... --config {config}"] = [*FIT, "--config", str(ROOT / config), *args.fit]
        names = [n for i, n in enumerate(ours) if args.only is None or i in args.only]
        commands: dict[str, tuple[list[str], dict[str, str] | None]] = {n: (ours[n], None) for n in names}
        if args.before:
            reference = next(iter(ours))
            commands[f"{reference}, code of {args.before}"] = (
                ours[reference],
                {**os.environ, "PYTHONPATH": args.before},
            )
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, (command, env) in commands.items():
                runs[name].append(measure(command, workdir, env))
        base = runs[names[0]]
        print(f"| command | median wall s | runs (s) | ratio to {names[0]} (median of run-by-run) | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- |")
        results = {}
        for name, measured in runs.items():
            walls = [w for w, _ in measured]
            ratio = median([w / b for (w, _), (b, _) in zip(measured, base)])
            results[name] = {
                "wall_s": median(walls),
                "runs_s": walls,
                "ratio": ratio,
                "rss_mib": median([r for _, r in measured]),
            }
            shown = ", ".join(f"{w:.2f}" for w in walls)
            print(f"| {name} | {median(walls):.2f} | {shown} | {ratio:.2f} | {results[name]['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
