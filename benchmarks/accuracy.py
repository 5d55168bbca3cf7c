"""Test accuracy on the official 10k test set after fitting a config, for several seeds.

python benchmarks/accuracy.py --config configs/cpu.yaml --seeds 0 1 2
python benchmarks/accuracy.py --config configs/best.yaml --seeds 0 1 2
"""

import argparse
import statistics
import time

from common import build, quiet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="repeatable, as for mnist-lite fit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*", help="extra mnist-lite fit arguments, e.g. --trainer.max_epochs=3")
    args = parser.parse_args()
    quiet()
    configs = [a for c in args.config for a in ("--config", c)]
    print(f"| seed | test accuracy | fit s |   ({' + '.join(args.config)} {' '.join(args.overrides)})")
    print("| --- | --- | --- |")
    accuracies = []
    for seed in args.seeds:
        trainer, model, dm = build(*configs, f"--seed_everything={seed}", *args.overrides)
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        seconds = time.perf_counter() - start
        accuracy = trainer.test(model, datamodule=dm, verbose=False)[0]["test_acc"]
        accuracies.append(accuracy)
        print(f"| {seed} | {accuracy:.2%} | {seconds:.1f} |", flush=True)
    print(f"| mean | {statistics.mean(accuracies):.2%} | |")


if __name__ == "__main__":
    main()
