"""``--jobs N``: N worker processes on one storage, as Optuna documents for a parallel study."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mnist_lite.commands.sweep import database, objective
from mnist_lite.errors import UserError, first_line


def run(settings: objective.Settings, trials: int, jobs: int) -> None:
    """``trials`` trials of the study, in this process or shared by ``jobs`` new ones."""
    shares = [n for i in range(jobs) if (n := trials // jobs + (i < trials % jobs))]
    if len(shares) == 1:
        return work(settings, trials)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked threads or connections
    try:
        with ProcessPoolExecutor(len(shares), mp_context=spawn) as pool:
            list(pool.map(work, [settings] * len(shares), shares))
    except BrokenProcessPool as e:
        raise UserError(f"a sweep worker died ({first_line(e)}); the study marks its trial failed.") from None


def work(settings: objective.Settings, trials: int) -> None:
    objective.work(database.study(settings.storage, settings.study), settings, trials)
