"""What a sweep writes into --output: trials.csv, best.yaml and Optuna's plots. The storage may be a database others
write: a trial with a value the space cannot draw, or a val_acc that is no accuracy, is left out of all three."""

import contextlib
import csv
import io
import reprlib
import sys
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mnist_lite.boundaries.files import printable, write_atomically
from mnist_lite.commands.sweep import database
from mnist_lite.commands.sweep.objective import Settings, quiet
from mnist_lite.errors import first_line


def write(study: optuna.Study, base: Any, settings: Settings) -> None:
    folder, seeds, space = settings.folder, settings.seeds, settings.space
    trials = [t for t in database.read(settings, lambda: study.trials) if _fits(t, space)]
    text = io.StringIO()
    rows = csv.writer(text)
    rows.writerow(["number", "state", *(d.key for d in space), "val_acc", "duration_s"])
    for t in trials:  # a value as Optuna stores it: a list or a mapping as JSON text
        value = "" if t.value is None else f"{t.value:.6f}"
        duration = f"{t.duration.total_seconds():.1f}" if t.duration else ""
        rows.writerow([t.number, t.state.name, *(t.params.get(d.name) for d in space), value, duration])
    write_atomically(text.getvalue().encode(), folder / "trials.csv")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned, failed = (sum(t.state == state for t in trials) for state in (TrialState.PRUNED, TrialState.FAIL))
    print(f"Study {settings.study!r}: {len(complete)} complete, {pruned} pruned, {failed} failed.")
    print(f"Wrote {folder / 'trials.csv'}")
    if not complete:
        return
    best = max(complete, key=lambda t: t.values[0])
    values = {d.key: d.value(best.params[d.name]) for d in space}
    config = base.parser.parse_args(settings.args({**values, "seed_everything": seeds[0]}))
    header = (
        f"# Trial {best.number} of study {settings.study!r}: mean val_acc {best.values[0]:.4f} over seeds "
        f"{', '.join(map(str, seeds))}; this config fits with seed {seeds[0]}.\n"
    )
    write_atomically((header + base.parser.dump(config, skip_none=False)).encode(), folder / "best.yaml")
    print(f"Best: trial {best.number}, mean val_acc {best.values[0]:.4f}.\nWrote {folder / 'best.yaml'}")
    kept = optuna.create_study(direction="maximize")  # in memory: the plots show the kept trials alone
    kept.add_trials([t for t in trials if t.state.is_finished()])
    _plot(kept, settings)


def _fits(trial: FrozenTrial, space: list) -> bool:
    """Whether each value is one the space draws, from its distribution; a complete trial has them all, and its
    val_acc is an accuracy. A trial that does not is said in a warning."""
    complete = trial.state == TrialState.COMPLETE
    problems = [problem for d in space if (problem := _misfit(d, trial, complete))]
    if complete and not 0 <= trial.values[0] <= 1:
        problems.append(f"its val_acc {trial.values[0]!r} is not an accuracy")
    if problems:
        print(f"mnist-lite: warning: trial {trial.number} is left out: {problems[0]}.", file=sys.stderr)
    return not problems


def _misfit(d: Any, trial: FrozenTrial, complete: bool) -> str | None:
    if d.name not in trial.params:
        return f"it has no value for {d.key}" if complete else None
    with contextlib.suppress(ValueError, TypeError):
        if trial.distributions[d.name] == d.distribution:
            d.value(trial.params[d.name])  # ValueError for a value outside the space
            return None
    return f"{d.key} = {printable(reprlib.repr(trial.params[d.name]))} is not in the space"


def _plot(study: optuna.Study, settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever display this process has
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    drawings: dict[str, Any] = {
        "history": plots.plot_optimization_history,
        "importances": plots.plot_param_importances,
        "parallel_coordinates": plots.plot_parallel_coordinate,
    }
    for name, plot in drawings.items():
        try:
            with quiet():
                figure = plot(study).figure
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances need two finished trials
            print(f"Not drawn: {name}.png ({first_line(e)})")
            continue
        figure.savefig(settings.folder / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        print(f"Wrote {settings.folder / name}.png")
