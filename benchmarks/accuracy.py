"""Validation and test accuracy (the official 10k) after fitting a config, for several seeds, with the fit's
wall and CPU seconds. Choices are made on the validation column; the test column only reports. With --last N,
the weights at the end of each of the last N epochs are tested too (the course's "consistently").

python benchmarks/accuracy.py --config configs/cpu.yaml --seeds 0 1 2
python benchmarks/accuracy.py --config configs/cpu.yaml --config configs/best.yaml --seeds 0 1 2
python benchmarks/accuracy.py --config configs/cpu.yaml --config configs/under_8k.yaml --seeds 0 1 2 --last 3
"""

import copy
import statistics
import time

from common import arguments, build, parse_with_fit_options, quiet, recorded


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--config", action="append", required=True, help="repeatable, as for mnist-lite fit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--last", type=int, default=1, help="test the weights of each of the last N epochs")
    args = parse_with_fit_options(parser)
    with recorded(args.json, "accuracy"):
        quiet()
        configs = [a for c in args.config for a in ("--config", c)]
        print(f"{' + '.join(args.config)} {' '.join(args.fit)}")
        earlier = "".join(f" test, epoch -{k} |" for k in range(args.last - 1, 0, -1))
        print(f"| seed | val accuracy |{earlier} test accuracy | fit s | fit CPU s |")
        print("| --- " * (5 + args.last - 1) + "|")
        vals, tests, cpus = [], [], []
        for seed in args.seeds:
            trainer, model, dm = build(*configs, f"--seed_everything={seed}", *args.fit)
            snapshots = epoch_snapshots(args.last)
            trainer.callbacks.append(snapshots)
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer.fit(model, datamodule=dm)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            vals.append(float(trainer.callback_metrics["val_acc"]))  # of the final weights (EMA: the average's)
            final = copy.deepcopy(model.state_dict())
            cells = []
            for state in snapshots.states[:-1]:  # the earlier epochs, oldest first
                model.load_state_dict(state)
                cells.append(f" {trainer.test(model, datamodule=dm, verbose=False)[0]['test_acc']:.2%} |")
            model.load_state_dict(final)
            tests.append(trainer.test(model, datamodule=dm, verbose=False)[0]["test_acc"])
            cpus.append(cpu)
            row = f"| {seed} | {vals[-1]:.2%} |{''.join(cells)} {tests[-1]:.2%} | {seconds:.0f} | {cpu:.0f} |"
            print(row, flush=True)
        blanks = " |" * (args.last - 1)
        mean_val, mean_test, mean_cpu = (statistics.mean(v) for v in (vals, tests, cpus))
        print(f"| mean | {mean_val:.2%} |{blanks} {mean_test:.2%} | | {mean_cpu:.0f} |")


def epoch_snapshots(last: int):  # a Callback, defined once Lightning is imported
    from lightning.pytorch import Callback

    class Snapshots(Callback):
        """The weights at the end of each of the last ``last`` training epochs, after their validation."""

        def __init__(self) -> None:
            self.states: list[dict] = []

        def on_validation_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking and trainer.current_epoch >= trainer.max_epochs - last:
                self.states.append(copy.deepcopy(pl_module.state_dict()))

    return Snapshots()


if __name__ == "__main__":
    main()
