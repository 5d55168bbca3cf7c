"""What `mnist-lite` costs before any work: `mnist-lite fit --help` as a whole process, and `import mnist_lite.cli`.

Each is run in a fresh process, repeated; medians of wall and CPU seconds. Then the heavy modules that importing
the CLI brings in, and which import pulled each in. To compare with another checkout, run this script with
PYTHONPATH=<that checkout>/src (it then measures that code).

    python benchmarks/startup.py [--repeats 5]
"""

import argparse
import re
import resource
import subprocess
import sys
import time

from common import median

HEAVY = [
    "torch",
    "lightning.pytorch",
    "torchmetrics.functional",
    "torchvision.models",
    "torch._dynamo",
    "matplotlib",
    "PIL",
]
HEAVY += ["onnx", "fastapi", "optuna", "mnist_lite.commands.sweep", "mnist_lite.server", "mnist_lite.figures"]
IMPORT = "import time; s = time.perf_counter(); import mnist_lite.cli; print(time.perf_counter() - s)"


def run(command: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, children included) of one process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, out


def importers() -> dict[str, str]:
    """For each heavy module the CLI imports: the nearest module outside its package in the chain that imported it."""
    command = [sys.executable, "-X", "importtime", "-c", "import mnist_lite.cli"]
    err = subprocess.run(command, capture_output=True, text=True).stderr
    # importtime lists a module after everything it imported, indented one level less
    rows = [(len(m.group(1)), m.group(2)) for m in re.finditer(r"\|\s*\d+ \|( *)(\S+)$", err, re.M)]
    found = {}
    for i, (depth, name) in enumerate(rows):
        if name not in HEAVY or name in found:
            continue
        found[name] = "-"
        for ancestor_depth, ancestor in rows[i + 1 :]:
            if ancestor_depth < depth:
                depth = ancestor_depth
                if ancestor.split(".")[0] != name.split(".")[0]:
                    found[name] = ancestor
                    break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    helps, imports = [], []
    for _ in range(args.repeats):
        helps.append(run(["mnist-lite", "fit", "--help"])[:2])
        _, cpu, out = run([sys.executable, "-c", IMPORT])
        imports.append((float(out), cpu))
    print("| measure | median wall s | median CPU s | runs, wall (s) |\n| --- | --- | --- | --- |")
    for name, results in (("mnist-lite fit --help (whole process)", helps), ("import mnist_lite.cli", imports)):
        walls = [w for w, _ in results]
        runs = ", ".join(f"{w:.2f}" for w in walls)
        print(f"| {name} | {median(walls):.2f} | {median([c for _, c in results]):.2f} | {runs} |")
    print("\nheavy modules importing mnist_lite.cli brings in (imported by):")
    found = importers()
    for name in HEAVY:
        print(f"  {name}: {found.get(name, 'not imported')}")


if __name__ == "__main__":
    main()
