"""``mnist-lite sweep``: an Optuna search over the YAML config, each trial a real ``mnist-lite fit``.

Each trial runs ``fit`` in this process through ``cli.cli``, LightningCLI's own path, with the base configs, the
trial's values as command-line overrides and one seed after another; its value is the mean final ``val_acc``
(never the test set). Optuna picks the values (TPE) and stops hopeless trials (median pruner on the running mean,
judged after each seed's fit: a one-cycle run's accuracy part-way says little about where it ends). The study
lives in the storage, so the same command again continues it, and several processes or machines sharing one
database URL work on one study.
"""

import contextlib
import csv
import io
import logging
import os
import subprocess
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse.typing import PositiveInt

from mnist_lite import lightning_cli, search_space
from mnist_lite.errors import UserError, concise
from mnist_lite.files import write_atomically

# A worker that stops sending heartbeats for GRACE_S has died: the next worker to start a trial marks its
# running trial failed, so a killed process costs only that trial.
HEARTBEAT_S, GRACE_S = 2, 8
FIT_OPTIONS = [  # each trial: no progress bar or checkpoints (best.yaml is the result), its own logs
    "--trainer.enable_progress_bar=false",
    "--checkpoint.save_top_k=0",
    "--checkpoint.save_last=false",
]


def sweep(
    config: list[str],
    space: str,
    trials: PositiveInt = 20,
    storage: str = "sqlite:///sweeps.db",
    study: str | None = None,
    output: str | None = None,
    seeds: list[int] | None = None,
    jobs: PositiveInt = 1,
) -> None:
    """Search hyperparameters with Optuna: each trial is a real fit of the configs with the trial's values.

    Args:
        config: the base configs, merged in order as fit merges them (give --config once per file).
        space: a YAML file mapping dotted config keys to distributions (see configs/sweep/cpu.yaml).
        trials: how many trials this command runs, shared by its jobs; the same command again adds more.
        storage: where the study lives: a SQLite file (nothing to start), or any database URL Optuna accepts,
            shared by many processes or machines.
        study: the study's name; by default the space file's name.
        output: the folder for best.yaml, trials.csv, the PNGs and the trials' logs; by default sweeps/<study>.
        seeds: the seeds each trial fits with; its value is the mean val_acc over them (default: 0).
        jobs: worker processes on this machine, sharing the storage and the cores.
    """
    try:
        import optuna
    except ImportError:
        raise UserError("sweep needs Optuna: pip install -e '.[sweep]'.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line of ours per trial instead
    seeds = seeds or [0]
    dimensions = search_space.load(space)
    name = study or Path(space).stem
    folder = Path(output or Path("sweeps") / name)
    base = _check(config, dimensions)
    the_study = _study(optuna, storage, name)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"config": config, "seeds": seeds, "folder": folder}
    worker = WORKER_ENV in os.environ  # one of the processes --jobs started: it runs trials, the parent reports
    if not worker:
        optuna.storages.fail_stale_trials(the_study)  # the running trials of workers that died (else at each start)
        done = len(the_study.trials)
        print(f"Study {name!r} in {storage}: {done} trials so far; this run adds {trials}.", flush=True)
    if jobs == 1 or worker:
        _work(optuna, the_study, dimensions, settings, trials)
    else:
        _start_workers(jobs, trials)
    if not worker:
        _write_outputs(optuna, _study(optuna, storage, name), dimensions, base, config, folder)


WORKER_ENV = "MNIST_LITE_SWEEP_WORKER"  # set in the processes --jobs starts


def _study(optuna: Any, storage: str, name: str) -> Any:
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's
        rdb = optuna.storages.RDBStorage(
            storage,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            engine_kwargs={"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else None,
        )
    except Exception as e:  # SQLAlchemy's errors for a bad URL or an unreachable server
        raise UserError(f"--storage {storage}: {str(e).splitlines()[0]}") from None
    return optuna.create_study(
        storage=rdb,
        study_name=name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
        load_if_exists=True,
    )


def _check(configs: list[str], dimensions: list[search_space.Dimension]) -> Any:
    """Parse the base configs, then each key at each bound or choice, with fit's own parser, before any trial."""
    base_args = [arg for path in configs for arg in ("--config", path)]
    with _quiet():
        try:
            base = lightning_cli.build(base_args, run=False, exit_on_error=False)
        except ArgumentError as e:
            raise UserError(f"--config: {concise(str(e))}") from None
    # One parse per round, each key at its next candidate (a parse costs about 0.25 s); a round that fails is
    # parsed again key by key, to name the one at fault.
    candidates = {d.key: d.candidates() for d in dimensions}
    for i in range(max(map(len, candidates.values()))):
        chosen = {key: values[i % len(values)] for key, values in candidates.items()}
        try:
            base.parser.parse_args([*base_args, *(_override(k, v) for k, v in chosen.items())])
            continue
        except ArgumentError:
            pass
        for key, value in chosen.items():
            try:
                base.parser.parse_args([*base_args, _override(key, value)])
            except ArgumentError as e:
                raise UserError(f"--space: {key}: {value!r} is not accepted: {concise(str(e))}") from None
        raise UserError(f"--space: these values are not accepted together: {chosen}")
    return base


def _override(key: str, value: Any) -> str:
    return f"--{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _work(optuna: Any, study: Any, dimensions: list, settings: dict, trials: int) -> None:
    base_args = [arg for path in settings["config"] for arg in ("--config", path)]
    logs = settings["folder"] / "runs"

    def objective(trial: Any) -> float:
        overrides = [_override(d.key, d.suggest(trial)) for d in dimensions]
        scores: list[float] = []
        for index, seed in enumerate(settings["seeds"]):
            args = ["fit", *base_args, *overrides, f"--seed_everything={seed}", *FIT_OPTIONS]
            args.append(f"--trainer.logger.init_args.save_dir={logs}")
            with _quiet():
                run = lightning_cli.build(args)
            trial.set_user_attr(f"run_seed_{seed}", str(run.trainer.log_dir))
            scores.append(float(run.trainer.callback_metrics["val_acc"]))
            trial.report(sum(scores) / len(scores), index)
            if index + 1 < len(settings["seeds"]) and trial.should_prune():
                raise optuna.TrialPruned
        return sum(scores) / len(scores)

    def progress(study: Any, trial: Any) -> None:
        _print_progress(study, trial, dimensions)

    study.optimize(objective, n_trials=trials, catch=(UserError,), callbacks=[progress])


def _print_progress(study: Any, trial: Any, dimensions: list) -> None:
    values = ", ".join(
        f"{d.name}={_short(d.value(trial.params[d.name]))}" for d in dimensions if d.name in trial.params
    )
    state = trial.state.name.lower()
    if trial.value is None:
        outcome = state  # failed: its run's error is above
    else:  # a pruned trial's value is the last running mean it reported
        outcome = f"val_acc {trial.value:.4f}" + (" so far, pruned" if state == "pruned" else "")
    try:
        best = f"best so far: trial {study.best_trial.number}, {study.best_value:.4f}"
    except ValueError:
        best = "no trial finished yet"
    duration = trial.duration.total_seconds() if trial.duration else 0
    print(f"trial {trial.number}: {outcome} in {duration:.0f} s ({values}); {best}", flush=True)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"[{', '.join(map(_short, value))}]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _start_workers(jobs: int, trials: int) -> None:
    """The same command in ``jobs`` processes, each with its share of the trials."""
    argv = sys.argv[1:]
    shares = [trials // jobs + (i < trials % jobs) for i in range(jobs)]
    processes = []
    for share in filter(None, shares):
        args = [*_without(argv, "--trials", "--jobs"), f"--trials={share}"]
        env = {**os.environ, WORKER_ENV: "1"}
        processes.append(subprocess.Popen([sys.executable, "-m", "mnist_lite", *args], env=env))
    failed = [p.args for p in processes if p.wait() != 0]
    if failed:
        raise UserError(f"{len(failed)} of {len(processes)} sweep workers failed (their lines are above).")


def _without(argv: list[str], *options: str) -> list[str]:
    """``argv`` without the given options and their values (``--opt value`` or ``--opt=value``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in options)):
            kept.append(arg)
    return kept


def _write_outputs(optuna: Any, study: Any, dimensions: list, base: Any, configs: list[str], folder: Path) -> None:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    _write_trials_csv(study, dimensions, folder / "trials.csv")
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    print(f"{len(study.trials)} trials: {len(complete)} complete, {pruned} pruned. Wrote {folder / 'trials.csv'}")
    if not complete:
        return
    best = study.best_trial
    values = {d.key: d.value(best.params[d.name]) for d in dimensions}
    base_args = [arg for path in configs for arg in ("--config", path)]
    config = base.parser.parse_args([*base_args, *(_override(k, v) for k, v in values.items())])
    text = base.parser.dump(config, skip_none=False)
    header = f"# Trial {best.number} of study {study.study_name!r}: mean val_acc {best.value:.4f}.\n"
    write_atomically((header + text).encode(), folder / "best.yaml")
    print(f"Best: trial {best.number}, val_acc {best.value:.4f}. Wrote {folder / 'best.yaml'}")
    _write_plots(optuna, study, folder)


def _write_trials_csv(study: Any, dimensions: list, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", *(d.key for d in dimensions), "val_acc", "duration_s"])
        for t in study.trials:
            params = [t.params.get(d.name, "") for d in dimensions]
            duration = f"{t.duration.total_seconds():.1f}" if t.duration else ""
            value = f"{t.value:.6f}" if t.value is not None else ""
            writer.writerow([t.number, t.state.name, *params, value, duration])


def _write_plots(optuna: Any, study: Any, folder: Path) -> None:
    """Optuna's matplotlib plots. They draw through pyplot: in this command's own process only, never on import."""
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever display this process has
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    drawings: dict[str, Callable[[Any], Any]] = {
        "history.png": plots.plot_optimization_history,
        "importances.png": plots.plot_param_importances,
        "parallel_coordinates.png": plots.plot_parallel_coordinate,
    }
    written, skipped = [], []
    for name, plot in drawings.items():
        try:
            with _quiet():
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances need two finished trials
            skipped.append(f"{name} ({_first_line(e)})")
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        written.append(str(folder / name))
    print(f"Wrote {', '.join(written)}" + (f"; not drawn: {', '.join(skipped)}" if skipped else ""))


@contextlib.contextmanager
def _quiet():
    """A trial's fit prints its run folder, checkpoints and Lightning's notes; the sweep prints one line instead.
    What it printed is shown if it fails."""
    out, err = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]  # their handlers hold the real stderr: quieted by level instead
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stdout.write(out.getvalue())
        sys.stderr.write(err.getvalue())
        raise
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
