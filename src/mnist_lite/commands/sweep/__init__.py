"""``mnist-lite sweep``: an Optuna search over the YAML config, each trial a real ``mnist-lite fit``."""

from pathlib import Path

from jsonargparse.typing import PositiveInt

from mnist_lite.errors import UserError


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
    # Imported once Optuna is known to be there; --help builds no Lightning.
    from mnist_lite.commands.sweep import database, objective, outputs, prechecks, search_space

    name = study or Path(space).stem
    folder = Path(output or Path("lightning_logs") / "sweeps" / name)
    settings = objective.Settings(config, seeds or [0], search_space.load(space), storage, name, folder)
    base = prechecks.base(settings)
    if not database.claimed(storage, name):  # a claimed study's space was checked when it was made
        prechecks.check_rounds(settings)
    the_study = database.study(storage, name)
    prechecks.claim(the_study, base, settings)  # refuses trials of other configs, seeds or space
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output {folder}: {e.strerror or e}.") from None
    # The running trials of workers that died are failed now (else at each start); records others wrote are read here.
    done = database.read(settings, lambda: optuna.storages.fail_stale_trials(the_study) or len(the_study.trials))
    print(f"Study {name!r} in {database.shown(storage)}: {done} trials so far; this run adds {trials}.", flush=True)
    objective.run(the_study, settings, trials, jobs)
    outputs.write(the_study, base, settings)
