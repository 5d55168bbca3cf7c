"""What `mnist-lite` costs before any work: `mnist-lite fit --help` as a whole process, `import mnist_lite.cli`, and
the parsers it then builds.

Each is run in a fresh process, repeated; medians of wall seconds. Then the heavy modules that importing
the CLI brings in, and which import pulled each in. To compare with another checkout, run this script with
PYTHONPATH=<that checkout>/src (it then measures that code).

    python benchmarks/startup.py [--repeats 5]
"""

import argparse
import re
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
# The import, then the parsers `fit --help` builds in the same process (stdout, the help text, thrown away).
IMPORT = """import contextlib, io, time
s = time.perf_counter(); import mnist_lite.cli; i = time.perf_counter() - s
s = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    mnist_lite.cli.main(["fit", "--help"])
print(i, time.perf_counter() - s)"""


def run(command: list[str]) -> tuple[float, str, str]:
    """Wall seconds of one process, and its stdout and stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout, done.stderr


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
    helps, imports, parsers = [], [], []
    for _ in range(args.repeats):
        helps.append(run(["mnist-lite", "fit", "--help"])[0])
        imported, parsed = run([sys.executable, "-c", IMPORT])[1].split()
        imports.append(float(imported))
        parsers.append(float(parsed))
    print("| measure | median wall s | runs (s) |\n| --- | --- | --- |")
    for name, walls in (
        ("mnist-lite fit --help (whole process)", helps),
        ("import mnist_lite.cli", imports),
        ("then building the parsers of fit --help", parsers),
    ):
        print(f"| {name} | {median(walls):.2f} | {', '.join(f'{w:.2f}' for w in walls)} |")
    print("\nheavy modules importing mnist_lite.cli brings in (imported by):")
    found = importers()
    for name in HEAVY:
        print(f"  {name}: {found.get(name, 'not imported')}")


if __name__ == "__main__":
    main()
