"""What the progress bar costs: one epoch of configs/cpu.yaml with Lightning's default bar (TQDMProgressBar,
redrawn after every step) and with redraws every N steps, mnist-lite's default among them.

In-process, imports excluded; the bar draws on a pseudo-terminal that `cat` drains, as a terminal would. Every hook
the bar defines is timed, so its cost is measured inside the run itself, per training step and as a share of that
run's epoch (goal < 2%): on a shared machine two runs' wall times differ by more than the bar costs. The settings
are alternated and repeated; medians.

    python benchmarks/progress_bar.py [--repeats 5] [--rates 1 10 20 50] [any mnist-lite fit option, --key=value]
"""

import contextlib
import io
import os
import time

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from mnist_lite.training.cli import PROGRESS_REFRESH_STEPS, build

from common import CPU, SCRATCH, arguments, median, parse_with_fit_options, pseudo_terminal, quiet, recorded, timed


@contextlib.contextmanager
def terminal():
    """sys.stdout, where Lightning's bar writes, on a pseudo-terminal."""
    with pseudo_terminal() as fd:
        out = io.TextIOWrapper(os.fdopen(os.dup(fd), "wb", buffering=0), write_through=True)
        with out, contextlib.redirect_stdout(out):
            yield


def timed_hooks(bar: Callback) -> list[float]:
    """Wrap each hook the bar's class defines so that its time adds up in the returned one-element list."""
    spent = [0.0]
    for name in vars(TQDMProgressBar):
        if name.startswith("on_"):
            hook = getattr(bar, name)

            def timed_hook(*args, _hook=hook, **kwargs):
                start = time.perf_counter()
                _hook(*args, **kwargs)
                spent[0] += time.perf_counter() - start

            setattr(bar, name, timed_hook)
    return spent


def epoch(rate: int, fit: list[str]) -> tuple[float, float, int]:
    """Seconds for one epoch with its validation, the seconds spent in the bar's hooks, and the training steps."""
    bar = TQDMProgressBar(refresh_rate=rate)
    spent = timed_hooks(bar)
    args = ["--config", CPU, f"--trainer.default_root_dir={SCRATCH}", "--trainer.logger=false"]
    args += ["--checkpoint.save_top_k=0", "--checkpoint.save_last=false", *fit]
    built = build(args, run=False, callbacks=[bar])
    built.datamodule.prepare_data()
    built.datamodule.setup("fit")
    with terminal():
        seconds = timed(lambda: built.trainer.fit(built.model, datamodule=built.datamodule))
    return seconds, spent[0], built.trainer.global_step


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rates", type=int, nargs="+", default=sorted({1, 10, PROGRESS_REFRESH_STEPS, 50}))
    args = parse_with_fit_options(parser)
    with recorded(args.json, "progress_bar"):
        quiet()
        runs: dict[int, list[tuple[float, float, int]]] = {rate: [] for rate in args.rates}
        for _ in range(args.repeats):
            for rate in args.rates:
                runs[rate].append(epoch(rate, args.fit))
        print("| progress bar | median epoch s | in the bar, ms per step | share of the epoch | shares of each run |")
        print("| --- | --- | --- | --- | --- |")
        for rate, results in runs.items():
            name = f"redraw every {rate} step{'s' * (rate > 1)}"
            if rate == PROGRESS_REFRESH_STEPS:
                name += " (mnist-lite's default)"
            elif rate == 1:
                name += " (Lightning's default)"
            shares = [bar / seconds for seconds, bar, _ in results]
            per_step = median([bar / steps * 1000 for _, bar, steps in results])
            each = ", ".join(f"{share:.1%}" for share in shares)
            print(
                f"| {name} | {median([r[0] for r in results]):.2f} | {per_step:.3f} | {median(shares):.1%} | {each} |"
            )
        print(f"\n{results[0][2]} training steps per epoch; goal: the default bar costs < 2% of the epoch")


if __name__ == "__main__":
    main()
