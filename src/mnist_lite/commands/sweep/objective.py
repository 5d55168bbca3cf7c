"""A trial: a real ``mnist-lite fit`` per seed, in this process, through LightningCLI's own path, its output dropped.
Its value is the mean final ``val_acc`` (never the test set), judged after each seed's fit: a one-cycle run's,
part-way, says little. ``--jobs N`` shares the trials among N processes on one storage, as Optuna documents."""

import contextlib
import io
import json
import logging
import multiprocessing
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

import optuna
import yaml

from mnist_lite.commands.sweep import database
from mnist_lite.errors import UserError, first_line
from mnist_lite.training import cli as training_cli

FIT_OPTIONS = ["--trainer.enable_progress_bar=false", "--checkpoint.save_top_k=0", "--checkpoint.save_last=false"]


@dataclass(frozen=True)
class Settings:
    configs: list[str]
    seeds: list[int]
    space: list  # search_space.Dimension
    storage: str
    study: str
    folder: Path

    def args(self, values: dict[str, Any] | None = None) -> list[str]:
        """fit's arguments, built here only: the configs, then ``values`` (dotted key to value) as overrides."""
        args = [a for c in self.configs for a in ("--config", c)]
        for key, value in (values or {}).items():
            text = yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n")  # a scalar's document end
            args.append(f"--{key}={text.strip()}")
        return args

    def trial_args(self, values: dict[str, Any] | None = None) -> list[str]:
        """A trial's fit: ``args``, no bar or checkpoints (best.yaml is the result), its log in the sweep's folder."""
        save_dir = str(self.folder / "runs")
        logger = {"class_path": "mnist_lite.training.loggers.RunLogger", "init_args": {"save_dir": save_dir}}
        return [*self.args(values), *FIT_OPTIONS, f"--trainer.logger={json.dumps(logger)}"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """What the code inside prints, warns or logs below WARNING is dropped (the sweep prints a line); errors rise."""
    logging.disable(logging.INFO)  # Lightning's log handlers hold the real stderr: its notes are dropped by level
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings(action="ignore"):
            yield
    finally:
        logging.disable(logging.NOTSET)


def run(study: optuna.Study, settings: Settings, trials: int, jobs: int) -> None:
    jobs = min(jobs, trials)
    if jobs == 1:
        work(study, settings, trials)
        return
    shares = [trials // jobs + (i < trials % jobs) for i in range(jobs)]
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked threads or connections
    try:
        with ProcessPoolExecutor(jobs, mp_context=spawn) as pool:
            list(pool.map(_worker, [settings] * jobs, shares))
    except BrokenProcessPool as e:
        raise UserError(f"a sweep worker died ({first_line(e)}); the study marks its trial failed.") from None


def _worker(settings: Settings, trials: int) -> None:
    work(database.study(settings.storage, settings.study), settings, trials)


def work(study: optuna.Study, settings: Settings, trials: int) -> None:
    """Run trials of the study here. One whose values break its fit fails alone, its error on its line."""

    def objective(trial: optuna.Trial) -> float:
        values = {d.key: d.suggest(trial) for d in settings.space}
        scores: list[float] = []
        for index, seed in enumerate(settings.seeds):
            try:
                with quiet():
                    fit = training_cli.build(["fit", *settings.trial_args({**values, "seed_everything": seed})])
            except Exception as e:
                trial.set_user_attr("error", f"{type(e).__name__}: {first_line(e)}"[:300])
                raise
            trial.set_user_attr(f"run_seed_{seed}", str(fit.trainer.log_dir))
            scores.append(float(fit.trainer.callback_metrics["val_acc"]))
            trial.report(mean(scores), index)
            if index + 1 < len(settings.seeds) and trial.should_prune():
                raise optuna.TrialPruned
        return mean(scores)

    def line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Each trial as it ends: its outcome, its values as Optuna stores them, and the best so far."""
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        if trial.value is None:
            outcome = f"failed ({trial.user_attrs.get('error', 'interrupted')})"
        else:  # a pruned trial's value is the last running mean it reported
            pruned = " so far, pruned" if trial.state == optuna.trial.TrialState.PRUNED else ""
            outcome = f"val_acc {trial.value:.4f}{pruned}"
        try:
            best = f"best so far: trial {study.best_trial.number}, {study.best_value:.4f}"
        except ValueError:
            best = "no trial finished yet"
        seconds = trial.duration.total_seconds() if trial.duration else 0
        print(f"trial {trial.number}: {outcome} in {seconds:.0f} s ({shown}); {best}", flush=True)

    # optimize, not study.ask(fixed_distributions): only optimize sends the heartbeats that fail a killed worker's trial
    study.optimize(objective, n_trials=trials, catch=(Exception,), callbacks=[line])
