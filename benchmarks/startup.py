"""What mnist-lite costs before any work: `mnist-lite --help`, `mnist-lite fit --help` (time and lines), and
`serve` (time from start to its first answer, and the memory of a worker).

Each is a fresh process, repeated and alternated with the same command on the code of another checkout when
--before SRC is given (run with PYTHONPATH=SRC, the same installed libraries); medians of wall seconds.

    python benchmarks/startup.py --ckpt CKPT [--repeats 5] [--before ../old-checkout/src] [--json out.json]
"""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import ROOT, arguments, median, recorded


def _env(src: Path | None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)} if src else dict(os.environ)


def _wall(args: list[str], src: Path | None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mnist_lite", *args], capture_output=True, text=True, env=_env(src))
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - start, done.stdout


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _serve(ckpt: Path, src: Path | None, workdir: Path) -> tuple[float, float]:
    """Seconds from start to the first answer of /health, and the serving process's resident memory then."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "mnist_lite", "serve", "--ckpt_path", str(ckpt), "--port", "0"]
    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(src)
    )
    try:
        assert process.stdout is not None
        line = ""
        while not line.startswith("Serving "):
            line = process.stdout.readline()
            assert line, "serve ended before it served"
        url = line.split(" at ")[1].split()[0]
        while True:
            try:
                with urllib.request.urlopen(url + "health", timeout=5) as reply:
                    reply.read()
                break
            except OSError:
                time.sleep(0.01)
        return time.perf_counter() - start, _rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint for serve")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path, help="the src/ folder of another checkout, measured alternately")
    args = parser.parse_args()
    with recorded(args.json, "startup"):
        codes = {"this checkout": None, **({f"before ({args.before})": args.before} if args.before else {})}
        results: dict[str, dict[str, list[float]]] = {name: {} for name in codes}
        workdir = Path(args.ckpt).resolve().parent
        for _ in range(args.repeats):
            for name, src in codes.items():
                measured = results[name]
                measured.setdefault("mnist-lite --help (s)", []).append(_wall(["--help"], src)[0])
                seconds, text = _wall(["fit", "--help"], src)
                measured.setdefault("mnist-lite fit --help (s)", []).append(seconds)
                measured.setdefault("fit --help lines", []).append(len(text.splitlines()))
                seconds, rss = _serve(args.ckpt.resolve(), src, workdir)
                measured.setdefault("serve: start to first answer (s)", []).append(seconds)
                measured.setdefault("serve: memory of the worker (MB)", []).append(rss)
        rows = list(next(iter(results.values())))
        print("| measure | " + " | ".join(codes) + (" | ratio |" if len(codes) == 2 else " |"))
        print("| --- " * (len(codes) + 1 + (len(codes) == 2)) + "|")
        for row in rows:
            values = [median(results[name][row]) for name in codes]
            ratio = f" | {values[0] / values[1]:.2f} |" if len(values) == 2 else " |"
            print(f"| {row} | " + " | ".join(f"{v:.2f}" if v < 100 else f"{v:.0f}" for v in values) + ratio)
        lines = len((ROOT / "src" / "mnist_lite" / "cli.py").read_text().splitlines())
        print(f"\nsrc/mnist_lite/cli.py: {lines} lines")


if __name__ == "__main__":
    main()
