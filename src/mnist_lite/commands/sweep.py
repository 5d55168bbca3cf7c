"""``mnist-lite sweep``: an Optuna search over the YAML config, each trial a real ``mnist-lite fit``.

Each trial runs ``fit`` in this process through ``lightning_cli.build``, LightningCLI's own path, with the base
configs, the trial's values as command-line overrides and one seed after another; its value is the mean final
``val_acc`` (never the test set). Optuna picks the values (TPE) and stops hopeless trials (median pruner on the
running mean, judged after each seed's fit: a one-cycle run's accuracy part-way says little about where it ends).
The study lives in the storage, so the same command again continues it, and several processes or machines
sharing one database URL work on one study. A study remembers the configs, seeds and space it was made with, and
takes no trial made with others.
"""

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import reprlib
import shlex
import subprocess
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from jsonargparse.typing import PositiveInt

from mnist_lite.boundaries import files
from mnist_lite.boundaries.files import write_atomically
from mnist_lite.commands import search_space
from mnist_lite.errors import UserError, concise, first_line
from mnist_lite.training import cli as lightning_cli

# A worker that stops sending heartbeats for GRACE_S has died: the next worker to start a trial marks its
# running trial failed, so a killed process costs only that trial. The tests shorten the wait.
GRACE_S = int(os.environ.get("MNIST_LITE_SWEEP_GRACE_S", "8"))
HEARTBEAT_S = max(1, GRACE_S // 4)
FIT_OPTIONS = [  # each trial: no progress bar or checkpoints (best.yaml is the result)
    "--trainer.enable_progress_bar=false",
    "--checkpoint.save_top_k=0",
    "--checkpoint.save_last=false",
]
SET_BY_THE_SWEEP = {"seed_everything": "--seeds", "trainer.logger": "the sweep (its trials log into --output)"}


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
        study: the study's name; by default the space file's name. A study takes trials of the configs, seeds and
            space it was made with only: give another name for other ones.
        output: the folder for best.yaml, trials.csv, the PNGs and the trials' logs; by default
            lightning_logs/sweeps/<study>.
        seeds: the seeds each trial fits with, in place of the configs' seed_everything; its value is the mean
            val_acc over them (default: 0).
        jobs: worker processes on this machine, sharing the storage and the cores.
    """
    try:
        import optuna
    except ImportError:
        raise UserError("sweep needs Optuna: pip install -e '.[sweep]'.") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line of ours per trial instead, failures too
    seeds = seeds or [0]
    if storage.startswith("sqlite") and (storage in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in storage):
        raise UserError(f"--storage {storage} keeps the study in memory, where no trial is kept: name a file.")
    dimensions = search_space.load(space)
    name = study or Path(space).stem
    folder = Path(output or Path("lightning_logs") / "sweeps" / name)
    base = _base(config, dimensions, folder)
    if not _claimed(optuna, storage, name):  # a claimed study's space was checked when it was made
        _check_rounds(base, config, dimensions, folder)
    the_study = _study(optuna, storage, name)
    _claim(the_study, _fingerprint(base, config, seeds, dimensions), _shown(storage))  # refuses other settings
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output {folder}: {e.strerror or e}.") from None
    settings = {"config": config, "seeds": seeds, "folder": folder}
    worker = WORKER_ENV in os.environ  # one of the processes --jobs started: it runs trials, the parent reports
    if not worker:
        optuna.storages.fail_stale_trials(the_study)  # the running trials of workers that died (else at each start)
        done = len(the_study.trials)
        print(f"Study {name!r} in {_shown(storage)}: {done} trials so far; this run adds {trials}.", flush=True)
    if jobs == 1 or worker:
        _work(optuna, the_study, dimensions, settings, trials)
    else:
        _start_workers(jobs, trials)
    if not worker:
        _write_outputs(optuna, _study(optuna, storage, name), dimensions, base, settings, _shown(storage))


WORKER_ENV = "MNIST_LITE_SWEEP_WORKER"  # set in the processes --jobs starts


def _study(optuna: Any, storage: str, name: str) -> Any:
    if (file := _sqlite_file(storage)) is not None:
        folder = file.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            why = "a file is in its way" if isinstance(e, FileExistsError | NotADirectoryError) else e.strerror or e
            raise UserError(f"--storage {storage}: cannot make the folder {folder}: {why}.") from None
    try:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's
        rdb = optuna.storages.RDBStorage(
            storage,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            engine_kwargs={"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else None,
        )
    except ImportError as e:  # Optuna's own words name no package
        driver = getattr(e.__cause__, "name", None) or "?"
        raise UserError(
            f"--storage {_shown(storage)}: its driver ({driver}) is not installed. Install it; for PostgreSQL, "
            "write postgresql:// and pip install -e '.[postgres]'."
        ) from None
    except Exception as e:  # SQLAlchemy's errors for a bad URL or an unreachable server
        raise UserError(f"--storage {_shown(storage)}: {str(e).splitlines()[0]}") from None
    return optuna.create_study(
        storage=rdb,
        study_name=name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
        load_if_exists=True,
    )


def _shown(storage: str) -> str:
    """The URL as messages show it: a password in it becomes ***."""
    from sqlalchemy.engine import make_url  # Optuna's own dependency

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: _study says so, and it holds no password to hide
        return storage


def _sqlite_file(storage: str) -> Path | None:
    return Path(storage.removeprefix("sqlite:///").split("?")[0]) if storage.startswith("sqlite:///") else None


def _claimed(optuna: Any, storage: str, name: str) -> bool:
    """Whether the storage holds the study already, claimed by a sweep; nothing is created to find out."""
    if (file := _sqlite_file(storage)) is not None and not file.exists():
        return False
    try:
        return "fingerprint" in optuna.load_study(study_name=name, storage=storage).user_attrs
    except Exception:  # no such study yet, or a storage that _study reports on
        return False


def _trial_options(folder: Path) -> list[str]:
    """What every trial's fit adds to the configs: no bar or checkpoints, and its log in the sweep's folder."""
    logger = {"class_path": "mnist_lite.training.loggers.RunLogger", "init_args": {"save_dir": str(folder / "runs")}}
    return [*FIT_OPTIONS, f"--trainer.logger={json.dumps(logger)}"]


def _base(configs: list[str], dimensions: list[search_space.Dimension], folder: Path) -> Any:
    """fit's CLI for the base configs with the options every trial adds, unrun; first, the keys only the sweep sets."""
    for d in dimensions:
        if d.key in SET_BY_THE_SWEEP or d.key.startswith("trainer.logger."):
            setter = SET_BY_THE_SWEEP.get(d.key, SET_BY_THE_SWEEP["trainer.logger"])
            raise UserError(f"--space: {d.key} is set by {setter}; leave it out of the space.")
    base_args = [arg for path in configs for arg in ("--config", path)]
    lightning_cli.check_config_files(base_args)
    with _quiet():
        try:
            base = lightning_cli.build([*base_args, *_trial_options(folder)], run=False, exit_on_error=False)
        except ArgumentError as e:
            raise UserError(f"--config: {concise(str(e))}") from None
    return base


def _check_rounds(base: Any, configs: list[str], dimensions: list[search_space.Dimension], folder: Path) -> None:
    """Each key at each bound or choice, parsed with fit's own parser and the options every trial adds, before any
    trial: every value a trial can draw then parses as it was written."""
    base_args = [arg for path in configs for arg in ("--config", path)]
    # One build per round, each key at its next candidate (about 0.3 s each): what a trial would build, with the
    # checks the classes make themselves; a round that fails to parse is parsed again key by key, to name the one.
    options = _trial_options(folder)
    candidates = {d.key: d.candidates() for d in dimensions}
    for i in range(max(map(len, candidates.values()))):
        chosen = {key: values[i % len(values)] for key, values in candidates.items()}
        overrides = [_override(k, v) for k, v in chosen.items()]
        try:
            with _quiet():
                lightning_cli.build([*base_args, *options, *overrides], run=False, exit_on_error=False)
        except ArgumentError:
            for key, value in chosen.items():
                try:
                    base.parser.parse_args([*base_args, _override(key, value)])
                except ArgumentError as e:
                    raise UserError(f"--space: {key}: {value!r} is not accepted: {concise(str(e))}") from None
            raise UserError(f"--space: these values are not accepted together: {chosen}") from None
        except UserError as e:
            raise UserError(f"--space: a trial of {chosen} would fail: {e}") from None


def _fingerprint(base: Any, configs: list[str], seeds: list[int], dimensions: list) -> dict[str, Any]:
    """What a study's trials are made of: the merged base configs (their content, not their names), the seeds
    and the space. Trials made of anything else cannot be ranked with its own."""
    base_args = [arg for path in configs for arg in ("--config", path)]
    settings = base.parser.dump(base.parser.parse_args(base_args), skip_none=False)
    space = json.dumps([[d.key, d.low, d.high, d.log, d.step, list(d.choices)] for d in dimensions])
    digest = hashlib.sha256("\n".join([settings, json.dumps(seeds), space]).encode()).hexdigest()[:16]
    words = [arg for path in configs for arg in ("--config", path)] + ["--seeds", *map(str, seeds)]
    return {"digest": digest, "made_with": shlex.join(words), "seeds": seeds}


def _claim(study: Any, fingerprint: dict[str, Any], where: str) -> None:
    """Mark a new study with its fingerprint, or refuse to add trials of other settings to an existing one."""
    found = _stored_fingerprint(study, where)
    if found is None:
        if study.trials:
            raise UserError(
                f"study {study.study_name!r} in {where} was not made by mnist-lite sweep: name another with --study."
            )
        study.set_user_attr("fingerprint", fingerprint)
    elif found["digest"] != fingerprint["digest"]:
        raise UserError(
            f"study {study.study_name!r} in {where} was made with {files.printable(found['made_with'])} and its space "
            "as it was then; these configs, seeds or space differ. Start a new study with --study NAME, or go back "
            "to those."
        )


# A study's storage may be a database someone else writes: what this command reads of it goes through the two
# readers below, once each. A fingerprint that does not parse refuses the study in a line; a trial whose values
# the space cannot draw (or whose val_acc is no accuracy) is left out of trials.csv, best.yaml and the plots, with
# a line on stderr.


def _stored_fingerprint(study: Any, where: str) -> dict[str, Any] | None:
    """The fingerprint a sweep stored in the study, or None for a study without one."""
    try:
        found = study.user_attrs.get("fingerprint")
    except Exception as e:  # a record Optuna itself cannot decode
        raise UserError(
            f"study {study.study_name!r} in {where}: its records cannot be read ({first_line(e)})."
        ) from None
    seeds = found.get("seeds") if isinstance(found, dict) else None
    if found is None or (
        isinstance(found, dict)
        and isinstance(found.get("digest"), str)
        and isinstance(found.get("made_with"), str)
        and isinstance(seeds, list)
        and seeds
        and all(type(seed) is int for seed in seeds)
    ):
        return found
    raise UserError(
        f"study {study.study_name!r} in {where} has a fingerprint no mnist-lite sweep wrote: name another with --study."
    )


def _trials_that_fit(
    optuna: Any, study: Any, dimensions: list[search_space.Dimension], where: str
) -> tuple[list[Any], int]:
    """The study's trials whose every value the space can draw, from the distribution it draws from; a complete
    trial has them all, and its val_acc is an accuracy; and how many others there are, each said in a warning."""
    try:
        trials = study.trials
    except Exception as e:  # a record Optuna itself cannot decode
        raise UserError(
            f"study {study.study_name!r} in {where}: its trials cannot be read ({first_line(e)})."
        ) from None
    kept = []
    for trial in trials:
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        problems = [problem for d in dimensions if (problem := _misfit(d, trial, complete))]
        if complete and not 0 <= trial.value <= 1:
            problems.append(f"its val_acc {trial.value!r} is not an accuracy")
        if problems:
            print(f"mnist-lite: warning: trial {trial.number} is left out: {problems[0]}.", file=sys.stderr)
        else:
            kept.append(trial)
    return kept, len(trials) - len(kept)


def _misfit(d: search_space.Dimension, trial: Any, complete: bool) -> str | None:
    if d.name not in trial.params:
        return f"it has no value for {d.key}" if complete else None
    value = trial.params[d.name]
    if trial.distributions[d.name] != d.distribution() or not d.holds(value):
        return f"{d.key} = {files.printable(reprlib.repr(value))} is not in the space"
    return None


def _override(key: str, value: Any) -> str:
    return f"--{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _work(optuna: Any, study: Any, dimensions: list, settings: dict, trials: int) -> None:
    base_args = [arg for path in settings["config"] for arg in ("--config", path)]

    def objective(trial: Any) -> float:
        overrides = [_override(d.key, d.suggest(trial)) for d in dimensions]
        scores: list[float] = []
        for index, seed in enumerate(settings["seeds"]):
            args = ["fit", *base_args, *overrides, f"--seed_everything={seed}", *_trial_options(settings["folder"])]
            try:
                with _quiet():
                    run = lightning_cli.build(args)
            except Exception as e:  # this trial's values broke its fit: said on its line, and the search goes on
                trial.set_user_attr("error", f"{type(e).__name__}: {first_line(e)}"[:300])
                raise
            trial.set_user_attr(f"run_seed_{seed}", str(run.trainer.log_dir))
            scores.append(float(run.trainer.callback_metrics["val_acc"]))
            trial.report(sum(scores) / len(scores), index)
            if index + 1 < len(settings["seeds"]) and trial.should_prune():
                raise optuna.TrialPruned
        return sum(scores) / len(scores)

    def progress(study: Any, trial: Any) -> None:
        _print_progress(study, trial, dimensions)

    # A trial whose values break its fit fails alone, with its error on one line; the search goes on.
    study.optimize(objective, n_trials=trials, catch=(Exception,), callbacks=[progress])


def _print_progress(study: Any, trial: Any, dimensions: list) -> None:
    values = ", ".join(
        f"{d.name}={_short(d.value(trial.params[d.name]))}" for d in dimensions if d.name in trial.params
    )
    state = trial.state.name.lower()
    if trial.value is None:
        outcome = f"failed ({trial.user_attrs.get('error', 'interrupted')})"
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


def _write_outputs(optuna: Any, study: Any, dimensions: list, base: Any, settings: dict, where: str) -> None:
    folder, seeds = settings["folder"], settings["seeds"]  # the study's own seeds: its fingerprint matched them
    trials, skipped = _trials_that_fit(optuna, study, dimensions, where)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    _write_trials_csv(trials, dimensions, folder / "trials.csv")
    pruned, failed = states.count(optuna.trial.TrialState.PRUNED), states.count(optuna.trial.TrialState.FAIL)
    print(f"Study {study.study_name!r}: {len(complete)} complete, {pruned} pruned, {failed} failed.")
    print(f"Wrote {folder / 'trials.csv'}")
    if not complete:
        return
    best = max(complete, key=lambda t: t.value)
    values = {d.key: d.value(best.params[d.name]) for d in dimensions}
    base_args = [arg for path in settings["config"] for arg in ("--config", path)]
    overrides = [_override(k, v) for k, v in values.items()]
    config = base.parser.parse_args([*base_args, *overrides, f"--seed_everything={seeds[0]}"])
    text = base.parser.dump(config, skip_none=False)
    header = (
        f"# Trial {best.number} of study {study.study_name!r}: mean val_acc {best.value:.4f} over seeds "
        f"{', '.join(map(str, seeds))}; this config fits with seed {seeds[0]}.\n"
    )
    write_atomically((header + text).encode(), folder / "best.yaml")
    print(f"Best: trial {best.number}, mean val_acc {best.value:.4f}.\nWrote {folder / 'best.yaml'}")
    if skipped:  # the plots show only the trials that fit, in a study of their own
        study = optuna.create_study(direction="maximize")
        study.add_trials([t for t in trials if t.state.is_finished()])
    _write_plots(optuna, study, folder)


def _write_trials_csv(trials: list, dimensions: list, path: Path) -> None:
    """One row per trial; a value as the config takes it (a choice of text is that text, a list is JSON)."""

    def cell(d: search_space.Dimension, params: dict) -> Any:
        if d.name not in params:
            return ""
        value = d.value(params[d.name])
        return value if isinstance(value, str | int | float) else json.dumps(value)

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["number", "state", *(d.key for d in dimensions), "val_acc", "duration_s"])
    for t in trials:
        duration = f"{t.duration.total_seconds():.1f}" if t.duration else ""
        value = f"{t.value:.6f}" if t.value is not None else ""
        writer.writerow([t.number, t.state.name, *(cell(d, t.params) for d in dimensions), value, duration])
    write_atomically(text.getvalue().encode(), path)


def _write_plots(optuna: Any, study: Any, folder: Path) -> None:
    """Optuna's matplotlib plots. They draw through pyplot: in this command's own process only, never on import."""
    import matplotlib.pyplot as plt

    written, skipped = [], []
    for name, figure in plots(optuna, study).items():
        if isinstance(figure, str):
            skipped.append(f"{name} ({figure})")
            continue
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        written.append(str(folder / name))
    print(f"Wrote {', '.join(written)}" + (f"; not drawn: {', '.join(skipped)}" if skipped else ""))


def plots(optuna: Any, study: Any) -> dict[str, Any]:
    """Each plot's figure, by file name, or why it cannot be drawn yet."""
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever display this process has
    from optuna.visualization import matplotlib as optuna_plots

    drawings: dict[str, Callable[[Any], Any]] = {
        "history.png": optuna_plots.plot_optimization_history,
        "importances.png": optuna_plots.plot_param_importances,
        "parallel_coordinates.png": optuna_plots.plot_parallel_coordinate,
    }
    figures: dict[str, Any] = {}
    for name, plot in drawings.items():
        try:
            with _quiet():
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances need two finished trials
            figures[name] = first_line(e)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        if name == "parallel_coordinates.png":
            _readable_parallel_coordinates(figure)
        figure.tight_layout()
        figures[name] = figure
    return figures


def _readable_parallel_coordinates(figure: Any) -> None:
    """Optuna draws the trials in light-to-dark blues (the worst nearly white) and its axis labels close together:
    a white ground, a colour map that stays dark enough on it, a width for the axes, and slanted labels make every
    trial and label legible (tests/test_sweep.py checks both)."""
    import matplotlib

    main_axes, *twins = figure.axes
    axes = [a for a in twins if a.get_label() != "<colorbar>"]
    figure.set_size_inches(max(9.0, 1.5 * (len(axes) + 1) + 2), 5.5)
    dark = matplotlib.colors.LinearSegmentedColormap.from_list("dark", matplotlib.colormaps["viridis"](range(0, 150)))
    main_axes.set_facecolor("white")
    for collection in main_axes.collections:
        collection.set_cmap(dark)
        collection.set_linewidth(1.5)
    for label in main_axes.get_xticklabels():
        label.set_rotation(25)
        label.set_horizontalalignment("right")
        label.set_fontsize(8)
    for twin in [main_axes, *axes]:
        twin.tick_params(axis="y", which="both", labelsize=7)
        twin.grid(False)
        labels = [label.get_text() for label in twin.get_yticklabels()]
        if any(len(text) > 18 and not text.startswith("$") for text in labels):  # a mapping's JSON: cut short
            short = [t if len(t) <= 18 or t.startswith("$") else t[:17] + "…" for t in labels]
            twin.set_yticks(twin.get_yticks(), labels=short)


@contextlib.contextmanager
def _quiet():
    """A trial's fit prints its run folder, checkpoints and Lightning's notes; the sweep prints one line instead."""
    out, err = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]  # their handlers hold the real stderr: quieted by level instead
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
