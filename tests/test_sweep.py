"""``mnist-lite sweep``: real fits on a tiny budget (tests/conf/tiny.yaml), an SQLite study, concurrent and killed
workers, and the one-line errors for a bad space."""

import csv
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from mnist_lite.cli import main
from mnist_lite.commands.sweep import objective, prechecks, search_space
from mnist_lite.commands.sweep.database import GRACE_S
from mnist_lite.errors import UserError

from helpers import CONF, CPU, ROOT, TINY, fails, free_port

SHIPPED = ROOT / "configs" / "sweep" / "cpu.yaml"
SPACE = CONF / "space.yaml"  # three keys: each sweep checks two rounds of values before its first trial, not five


@pytest.fixture
def base(data_dir: Path, tmp_path: Path) -> list[str]:
    """cpu.yaml on tiny.yaml's budget, reading the session's extracted MNIST."""
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"data": {"data_dir": str(data_dir)}}))
    return ["--config", str(CPU), "--config", str(TINY), "--config", str(data)]


def _sweep(base: list[str], folder: Path, *extra: str, space: Path = SPACE) -> list[str]:
    storage = f"sqlite:///{folder / 'study.db'}"
    return ["sweep", *base, "--space", str(space), "--storage", storage, "--output", str(folder / "out"), *extra]


def _study(folder: Path, space: Path = SPACE) -> optuna.Study:
    return optuna.load_study(study_name=space.stem, storage=f"sqlite:///{folder / 'study.db'}")


def _states(folder: Path, space: Path = SPACE) -> dict[int, str]:
    return {t.number: t.state.name for t in _study(folder, space).trials}


@pytest.mark.slow
def test_a_sweep_writes_its_study_and_files_and_best_yaml_refits_the_best_trial(
    base: list[str], in_tmp: Path, capsys, monkeypatch
) -> None:
    """On the shipped space, configs/sweep/cpu.yaml."""
    main(_sweep(base, in_tmp, "--trials", "3", space=SHIPPED))
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("trial ")]) == 3
    assert "best so far: trial" in out and "max_lr=" in out and "batch_size=" in out
    assert _states(in_tmp, SHIPPED) == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE"}
    folder = in_tmp / "out"
    with open(folder / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert all(r["state"] == "COMPLETE" and 0 < float(r["val_acc"]) <= 1 for r in rows)
    assert "model.scheduler.init_args.max_lr" in rows[0] and float(rows[0]["duration_s"]) > 0
    for name in ("history.png", "importances.png", "parallel_coordinates.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # best.yaml is a complete config: fit runs it as is and lands on the best trial's val_acc.
    study = _study(in_tmp, SHIPPED)
    main(["fit", "--config", str(folder / "best.yaml")])
    out = capsys.readouterr().out
    assert f"(val_acc={study.best_value:.4f})" in out

    checked = []
    monkeypatch.setattr(prechecks, "check_rounds", lambda *args: checked.append(args))
    main(_sweep(base, in_tmp, "--trials", "1", space=SHIPPED))  # the same command again continues the study
    assert "3 trials so far; this run adds 1" in capsys.readouterr().out
    assert not checked  # its space was checked when it was made
    assert sorted(_states(in_tmp, SHIPPED)) == [0, 1, 2, 3]


@pytest.mark.slow
def test_two_workers_on_one_sqlite_file_share_the_study_and_lose_no_trial(base: list[str], in_tmp: Path, capfd) -> None:
    """The workers --jobs starts print only their own lines (as a newcomer's commands must, tests/test_cli.py), and
    take their work from the call, not from the command line this process was started with (pytest's, here)."""
    main(_sweep(base, in_tmp, "--trials", "2", "--jobs", "2"))
    out, err = capfd.readouterr()
    assert _states(in_tmp) == dict.fromkeys(range(2), "COMPLETE")
    assert sum(line.startswith("trial ") for line in out.splitlines()) == 2
    assert err == ""


@pytest.mark.slow
def test_a_worker_killed_mid_trial_costs_only_its_trial(base: list[str], in_tmp: Path) -> None:
    longer = [*base, "--config", str(_write(in_tmp / "longer.yaml", {"trainer": {"limit_train_batches": 150}}))]
    command = [sys.executable, "-m", "mnist_lite", *_sweep(longer, in_tmp, "--trials", "1")]
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _running(in_tmp / "study.db"):
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert _states(in_tmp) == {0: "RUNNING"}  # what a dead process leaves behind
    time.sleep(GRACE_S + 1)  # its heartbeat has stopped: past the grace period it is stale
    main(_sweep(longer, in_tmp, "--trials", "1"))
    assert _states(in_tmp) == {0: "FAIL", 1: "COMPLETE"}


def test_a_trial_the_pruner_stops_ends_pruned_with_its_val_acc_reported(base: list[str], in_tmp: Path, capsys) -> None:
    """The running mean reaches Optuna after each seed's fit; a pruner that stops everything (a threshold no
    accuracy reaches) ends the trial after its first seed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    settings = objective.Settings(base[1::2], [0, 1], search_space.load(SPACE), "sqlite://", "pruned", in_tmp)
    objective.work(study, settings, trials=1)
    (trial,) = study.trials
    assert trial.state.name == "PRUNED"
    assert f"trial 0: val_acc {trial.value:.4f} so far, pruned in" in capsys.readouterr().out
    assert list(trial.intermediate_values) == [0] and 0 < trial.intermediate_values[0] < 1
    assert "run_seed_1" not in trial.user_attrs  # the second seed never ran


def _running(db: Path) -> bool:
    """Whether the worker has a trial running and has sent its first heartbeat: one killed in the milliseconds
    before that leaves a trial that no heartbeat can show stale. Read with sqlite3, because optuna.load_study
    would create Optuna's tables and race the worker doing the same."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            query = "select count(*) from trials join trial_heartbeats using (trial_id) where state = 'RUNNING'"
            return connection.execute(query).fetchone()[0] > 0
    except sqlite3.OperationalError:  # the worker has not made its tables yet
        return False


def _write(path: Path, content: object) -> Path:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


SPACES_FIT_REFUSES = {  # well-formed distributions whose values fit's parser refuses
    "unknown key": ({"model.learning_rate": {"low": 0.1, "high": 0.2}}, "model.learning_rate"),
    "wrong type": ({"data.batch_size": {"choices": ["big", 64]}}, "data.batch_size: 'big' is not"),
    "a float for an int": ({"data.batch_size": {"low": 32, "high": 1.0e20}}, "data.batch_size: '32.0' is not"),
    "a batch over the set": ({"data.batch_size": {"low": 32, "high": 10**8}}, "is more than the 55,000 training"),
    "the seed": ({"seed_everything": {"low": 0, "high": 9}}, "seed_everything is set by --seeds"),
    "the logger": ({"trainer.logger.init_args.save_dir": {"choices": ["a"]}}, "is set by the sweep"),
}
MALFORMED_SPACES = {
    "low above high": ({"model.label_smoothing": {"low": 0.2, "high": 0.1}}, "`low <= high` must hold"),
    "no high": ({"model.label_smoothing": {"low": 0.1}}, "missing 1 required positional argument: 'high'"),
    "log of zero": ({"model.label_smoothing": {"low": 0.0, "high": 0.1, "log": True}}, "`low > 0` must hold for `log"),
    "empty choices": ({"data.batch_size": {"choices": []}}, "The `choices` must contain one or more elements"),
    "mixed": ({"data.batch_size": {"choices": [32], "low": 1}}, "unexpected keyword argument 'low'"),
    "log not a switch": ({"model.label_smoothing": {"low": 0.1, "high": 0.2, "log": "no"}}, "log must be true or"),
    "infinite bound": ({"model.label_smoothing": {"low": 0.1, "high": float("inf")}}, "must be finite numbers"),
    "not a distribution": ({"data.batch_size": 64}, "64 is not a distribution"),
    "text bound": ({"data.batch_size": {"low": "a", "high": 64}}, "must be finite numbers"),
    "not a mapping": ("- a\n- b\n", "must map config keys to distributions"),
    "not yaml": ("a: [b\n", "is not valid YAML"),
    "nested 20,000 deep": ("a: " + "[" * 20_000 + "]" * 20_000 + "\n", "is not valid YAML"),
    "aliases that expand to a billion": (
        "a: &a [0]\n"
        + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefghi", "bcdefghij"))
        + "data.batch_size: {choices: [*j]}\n",
        "through its aliases",
    ),
}


@pytest.mark.parametrize("case", [*SPACES_FIT_REFUSES, "low above high", "not yaml"])
def test_a_bad_space_is_one_line_before_any_trial(case: str, base: list[str], in_tmp: Path, capsys) -> None:
    content, message = {**SPACES_FIT_REFUSES, **MALFORMED_SPACES}[case]
    space = _write(in_tmp / "space.yaml", content)
    args = _sweep(base, in_tmp, "--trials", "1")
    args[args.index("--space") + 1] = str(space)
    err = fails(args, capsys, max_lines=1)
    assert message in err
    assert not (in_tmp / "study.db").exists() and not (in_tmp / "out").exists()  # nothing ran or was written


@pytest.mark.parametrize("case", MALFORMED_SPACES)
def test_a_malformed_space_names_its_file_key_and_problem_in_one_line(case: str, tmp_path: Path) -> None:
    content, message = MALFORMED_SPACES[case]
    space = _write(tmp_path / "space.yaml", content)
    with pytest.raises(UserError) as refused:
        search_space.load(space)
    assert str(refused.value).startswith(f"--space {space}") and message in str(refused.value)
    if isinstance(content, dict):  # a key's problem names the key
        assert f": {next(iter(content))}: " in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_bound_written_as_1e_minus_4_is_a_number(tmp_path: Path) -> None:
    space = _write(tmp_path / "space.yaml", "model.optimizer.init_args.lr: {low: 1e-4, high: 1e-2, log: true}\n")
    assert search_space.load(space)[0].distribution.low == 1e-4  # PyYAML's safe_load reads 1e-4 as text


def test_a_missing_space_file_is_one_line(base: list[str], in_tmp: Path, capsys) -> None:
    args = _sweep(base, in_tmp)
    args[args.index("--space") + 1] = "missing.yaml"
    assert "--space missing.yaml: No such file or directory" in fails(args, capsys, max_lines=1)


def test_seeds_and_configs_are_given_as_plain_words(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    usage = capsys.readouterr().out
    assert "--config CONFIG [CONFIG ...]" in usage and "--seeds SEEDS [SEEDS ...]" in usage


def test_short_names_are_unambiguous() -> None:
    space = search_space._short_name
    keys = ["model.optimizer.init_args.lr", "model.scheduler.init_args.lr", "data.batch_size"]
    assert [space(k, keys) for k in keys] == ["optimizer.init_args.lr", "scheduler.init_args.lr", "batch_size"]


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("sqlite://", "--storage sqlite:// keeps the study in memory"),
        (
            "sqlite:///a_file/study.db",
            "--storage sqlite:///a_file/study.db: cannot make the folder a_file: File exists",
        ),
        (
            "postgresql://optuna:secret@127.0.0.1:{port}/optuna",
            "--storage postgresql://optuna:***@127.0.0.1:{port}/optuna: (psycopg.OperationalError) connection failed",
        ),
        (
            "mysql://optuna@127.0.0.1/optuna",
            "--storage mysql://optuna@127.0.0.1/optuna: No module named 'MySQLdb'; install the",
        ),
    ],
    ids=["in-memory", "under-a-file", "no-server", "no-driver"],
)
def test_a_storage_that_cannot_keep_the_study_is_one_line(storage, expected, base, in_tmp: Path, capsys) -> None:
    (in_tmp / "a_file").write_text("")
    port = free_port()
    args = _sweep(base, in_tmp, "--trials", "1")
    args[args.index("--storage") + 1] = storage.format(port=port)
    err = fails(args, capsys, max_lines=1)
    assert expected.format(port=port) in err and "secret" not in err  # the password is shown as ***


def test_a_study_takes_no_trial_of_other_configs(base: list[str], in_tmp: Path, capsys, monkeypatch) -> None:
    main(_sweep(base, in_tmp, "--trials", "1"))
    capsys.readouterr()
    monkeypatch.setattr(prechecks, "check_rounds", lambda *args: pytest.fail("refused only after checks"))
    other = [*base, "--config", str(_write(in_tmp / "other.yaml", {"model": {"label_smoothing": 0.2}}))]
    err = fails(_sweep(other, in_tmp, "--trials", "1"), capsys, max_lines=1)
    assert f"study '{SPACE.stem}' in sqlite:///" in err and f"was made with --config {CPU}" in err
    assert "Start a new study with --study NAME" in err
    assert len(_study(in_tmp).trials) == 1
    err = fails(_sweep(base, in_tmp, "--trials", "1", "--seeds", "0", "1"), capsys, max_lines=1)
    assert "these configs, seeds or space differ" in err


def test_by_default_a_sweep_writes_under_lightning_logs_not_over_a_record(base, in_tmp: Path, capsys) -> None:
    args = _sweep(
        base, in_tmp, "--trials", "1", "--config", str(_write(in_tmp / "off.yaml", {"trainer": {"logger": False}}))
    )
    del args[args.index("--output") : args.index("--output") + 2]
    main(args)  # the configs' `logger: false` is no obstacle: a trial logs into the sweep's folder
    written = in_tmp / "lightning_logs" / "sweeps" / SPACE.stem
    assert (written / "trials.csv").is_file() and (written / "best.yaml").is_file()
    assert not (in_tmp / "sweeps").exists()
    with open(written / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["model.scheduler.init_args.anneal_strategy"] in ("linear", "cos")  # as the config takes it
    assert rows[0]["model.optimizer.init_args.betas"].startswith("[")
    best = (written / "best.yaml").read_text()
    assert "seed_everything: 0" in best and "mean val_acc" in best.splitlines()[0]


# A study's storage may be a database someone else writes. Each record below, stored beside a study's real ones,
# was once a traceback or, for a value outside the space, best.yaml itself.
STORED_SPACE = {
    "model.label_smoothing": {"low": 0.0, "high": 0.15, "step": 0.05},
    "data.batch_size": {"choices": [32, 64]},
    "model.optimizer.init_args.betas": {"choices": [[0.9, 0.999], [0.8, 0.99]]},
}
DRAWN = {"label_smoothing": 0.05, "batch_size": 64, "betas": "[0.9, 0.999]"}  # as Optuna stores a trial's values
DRAWN_FROM = {  # the distributions a trial of STORED_SPACE draws from
    "label_smoothing": optuna.distributions.FloatDistribution(0.0, 0.15, step=0.05),
    "batch_size": optuna.distributions.CategoricalDistribution([32, 64]),
    "betas": optuna.distributions.CategoricalDistribution(["[0.9, 0.999]", "[0.8, 0.99]"]),
}


@pytest.fixture
def stored(base: list[str], in_tmp: Path, capsys, monkeypatch) -> tuple[list[str], optuna.Study]:
    """A study a sweep claimed and one real-looking complete trial (val_acc 0.5), and the command that continues it;
    the trials' fits are left out, so the command only reads the storage and writes its outputs."""
    space = _write(in_tmp / "stored.yaml", STORED_SPACE)
    monkeypatch.setattr(objective, "work", lambda *args: None)
    args = _sweep(base, in_tmp, "--trials", "1", space=space)
    main(args)
    study = _study(in_tmp, space)
    _add_trial(study, 0.5, DRAWN)
    capsys.readouterr()
    return args, study


def _add_trial(study: optuna.Study, value: float, params: dict, **distributions) -> int:
    """A complete trial as another process could store it: the space's distributions unless others are given."""
    kept = {name: distributions.get(name, DRAWN_FROM[name]) for name in params}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=kept, value=value))
    return study.trials[-1].number


def _store_choice(study: optuna.Study, number: int, name: str, choice: str) -> None:
    """Rewrite a trial's stored value as a choice of a distribution of its own: what no Optuna call would store."""
    stored = optuna.distributions.distribution_to_json(optuna.distributions.CategoricalDistribution([choice]))
    trial = "(select trial_id from trials join studies using (study_id) where study_name = ? and number = ?)"
    with sqlite3.connect("study.db") as db:
        db.execute(
            f"update trial_params set param_value = 0, distribution_json = ? where trial_id = {trial} and param_name=?",
            (stored, study.study_name, number, name),
        )


def _outside_the_space(study: optuna.Study) -> int:
    wide = optuna.distributions.FloatDistribution(0.0, 1.0)
    return _add_trial(study, 0.99, {**DRAWN, "label_smoothing": 0.99}, label_smoothing=wide)


def _missing_a_value(study: optuna.Study) -> int:
    return _add_trial(study, 0.99, {k: v for k, v in DRAWN.items() if k != "batch_size"})


def _of_the_wrong_type(study: optuna.Study) -> int:
    number = _add_trial(study, 0.99, DRAWN)
    _store_choice(study, number, "batch_size", "big")
    return number


def _not_json(study: optuna.Study) -> int:
    number = _add_trial(study, 0.99, DRAWN)
    _store_choice(study, number, "betas", "[0.9, oops")
    return number


STORED_TRIALS = {
    "label-smoothing-0.99-outside-the-space": (_outside_the_space, "model.label_smoothing = 0.99 is not in the space"),
    "best-trial-missing-a-value": (_missing_a_value, "it has no value for data.batch_size"),
    "best-trial-of-the-wrong-type": (_of_the_wrong_type, "data.batch_size = 'big' is not in the space"),
    "a-choice-that-is-not-json": (_not_json, "model.optimizer.init_args.betas = '[0.9, oops' is not in the space"),
}


@pytest.mark.parametrize("case", STORED_TRIALS)
def test_a_stored_trial_the_space_cannot_draw_is_left_out_with_a_warning(case: str, stored, capsys) -> None:
    args, study = stored
    store, warning = STORED_TRIALS[case]
    number = store(study)
    main(args)
    out, err = capsys.readouterr()
    assert err == f"mnist-lite: warning: trial {number} is left out: {warning}.\n"
    assert "Best: trial 0, mean val_acc 0.5000." in out and "1 complete, 0 pruned, 0 failed" in out
    folder = Path(args[args.index("--output") + 1])
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["model"]["label_smoothing"] == 0.05 and best["data"]["batch_size"] == 64
    with open(folder / "trials.csv", newline="") as f:
        assert [row["number"] for row in csv.DictReader(f)] == ["0"]


STORED_FINGERPRINTS = {
    "not-a-mapping": lambda found: "a fingerprint",
    "empty-seeds": lambda found: {**found, "seeds": []},
    "seeds-not-numbers": lambda found: {**found, "seeds": ["0"]},
    "no-digest": lambda found: {"made_with": found["made_with"], "seeds": [0]},
}


@pytest.mark.parametrize(
    "sql",
    ["update trials set datetime_start = 'notadate'", "update trial_params set distribution_json = 'garbage'"],
    ids=["date", "distribution"],
)
def test_stored_records_optuna_cannot_decode_refuse_the_study_in_a_line(sql: str, stored, in_tmp: Path, capsys) -> None:
    """Records another process wrote, read as the sweep starts: one line, not Optuna's traceback."""
    args, _ = stored
    with sqlite3.connect(in_tmp / "study.db") as database:
        database.execute(sql)
    err = fails(args, capsys, max_lines=1)
    assert "study 'stored' in sqlite:///" in err and "its records cannot be read" in err, err


@pytest.mark.parametrize("case", STORED_FINGERPRINTS)
def test_a_stored_fingerprint_that_does_not_parse_refuses_the_study_in_a_line(case: str, stored, capsys) -> None:
    args, study = stored
    study.set_user_attr("fingerprint", STORED_FINGERPRINTS[case](study.user_attrs["fingerprint"]))
    err = fails(args, capsys, max_lines=1)
    assert "study 'stored' in sqlite:///" in err and "has a fingerprint no mnist-lite sweep wrote" in err
