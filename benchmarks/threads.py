"""torch's CPU threads for `mnist-lite fit --config configs/cpu.yaml`, on an idle machine and on a busy one.

Runs the whole command as people run it (progress bar on, output to a file) with mnist-lite's default (one thread)
and with --threads equal to the machine's cores (torch's own default), alternated; then the same again while one
other CPU-bound process runs beside it. Reports median wall seconds.

    python benchmarks/threads.py [--repeats 3] [--loads idle busy] [any mnist-lite fit option, --key=value]
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from common import CPU, arguments, median, parse_with_fit_options, prepared_workdir, recorded

BUSY = "while True: pass"  # one other job: a process that keeps one core busy


def fit(threads: int | None, workdir: Path, options: list[str]) -> float:
    command = ["mnist-lite", "fit", "--config", CPU, *([f"--threads={threads}"] if threads else []), *options]
    start = time.perf_counter()
    with open(workdir / "out.log", "w") as log:
        subprocess.run(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loads", nargs="+", choices=["idle", "busy"], default=["idle", "busy"])
    args = parse_with_fit_options(parser)
    with recorded(args.json, "threads"):
        workdir = prepared_workdir("mnist-lite-threads-")
        cores = os.cpu_count() or 1
        settings: list[int | None] = [None, cores]
        print("| machine | threads | median wall s | runs (s) |\n| --- | --- | --- | --- |")
        for state in args.loads:
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if state == "busy" else None
            try:
                runs: dict[int | None, list[float]] = {n: [] for n in settings}
                for _ in range(args.repeats):
                    for n in settings:
                        runs[n].append(fit(n, workdir, args.fit))
            finally:
                if busy is not None:
                    busy.kill()
            for n in settings:
                name = n or "default (1)"
                print(f"| {state} | {name} | {median(runs[n]):.1f} | {', '.join(f'{t:.1f}' for t in runs[n])} |")


if __name__ == "__main__":
    main()
