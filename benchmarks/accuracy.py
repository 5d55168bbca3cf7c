"""Validation and test accuracy (the official 10k) after fitting a config, for several seeds, with the fit's
wall and CPU seconds. Choices are made on the validation column; the test column only reports.

python benchmarks/accuracy.py --config configs/cpu.yaml --seeds 0 1 2
python benchmarks/accuracy.py --config configs/cpu.yaml --config configs/best.yaml --seeds 0 1 2
"""

import statistics
import time

from common import arguments, build, parse_with_fit_options, quiet, recorded


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--config", action="append", required=True, help="repeatable, as for mnist-lite fit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parse_with_fit_options(parser)
    with recorded(args.json, "accuracy"):
        quiet()
        configs = [a for c in args.config for a in ("--config", c)]
        print(f"{' + '.join(args.config)} {' '.join(args.fit)}")
        print("| seed | val accuracy | test accuracy | fit s | fit CPU s |")
        print("| --- | --- | --- | --- | --- |")
        vals, tests, cpus = [], [], []
        for seed in args.seeds:
            trainer, model, dm = build(*configs, f"--seed_everything={seed}", *args.fit)
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer.fit(model, datamodule=dm)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            vals.append(float(trainer.callback_metrics["val_acc"]))  # of the final weights (EMA: the average's)
            tests.append(trainer.test(model, datamodule=dm, verbose=False)[0]["test_acc"])
            cpus.append(cpu)
            print(f"| {seed} | {vals[-1]:.2%} | {tests[-1]:.2%} | {seconds:.0f} | {cpu:.0f} |", flush=True)
        print(f"| mean | {statistics.mean(vals):.2%} | {statistics.mean(tests):.2%} | | {statistics.mean(cpus):.0f} |")


if __name__ == "__main__":
    main()
