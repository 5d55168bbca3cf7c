"""The study's storage: a SQLite file or any database URL Optuna takes, with heartbeats, so that a worker that
dies costs only its trial."""

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from mnist_lite.errors import UserError, first_line

# A worker without a heartbeat for GRACE_S has died: the next trial to start marks its trial failed (tests shorten it).
GRACE_S = int(os.environ.get("MNIST_LITE_SWEEP_GRACE_S", "8"))
HEARTBEAT_S = max(1, GRACE_S // 4)


def claimed(url: str, name: str) -> bool:
    """Whether the storage holds the study already, claimed by a sweep (a SQLite file that is not there is not made)."""
    if url.startswith("sqlite") and (url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url):
        raise UserError(f"--storage {url} keeps the study in memory, where no trial is kept: name a file.")
    if (file := _sqlite_file(url)) is not None and not file.exists():
        return False
    try:
        return "fingerprint" in optuna.load_study(study_name=name, storage=url).user_attrs
    except Exception:  # no such study yet, or a storage that study() reports on
        return False


def study(url: str, name: str) -> optuna.Study:
    """The study ``name`` in ``url``, made if it is new; a URL that cannot hold it is a line."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints a line per trial, failures too
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's, the plots'
    if (file := _sqlite_file(url)) is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--storage {url}: cannot make the folder {file.parent}: {e.strerror or e}.") from None
    try:
        storage = _storage(url)
    except ImportError as e:  # Optuna's own words name no package: the missing module's do
        install = "install the driver (pip install -e '.[postgres]' for PostgreSQL)"
        raise UserError(f"--storage {shown(url)}: {first_line(e.__cause__ or e)}; {install}.") from None
    except Exception as e:  # SQLAlchemy's errors for a bad URL or an unreachable server
        raise UserError(f"--storage {shown(url)}: {first_line(e)}") from None
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5)  # judged after each seed's fit (objective.py)
    return optuna.create_study(
        storage=storage, study_name=name, direction="maximize", pruner=pruner, load_if_exists=True
    )


def _storage(url: str) -> RDBStorage:
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # SQLite's workers wait their turn

    def make() -> RDBStorage:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)

    for pause in (1, 2):  # machines that start together on a new database race to make Optuna's tables
        try:
            return make()
        except (IntegrityError, ProgrammingError):
            time.sleep(pause)
    return make()


def read(settings: Any, what: Callable[[], Any]) -> Any:
    """``what()``, a read of the study's records: one Optuna itself cannot decode is a line (others may write them)."""
    try:
        return what()
    except Exception as e:
        named = f"study {settings.study!r} in {shown(settings.storage)}"
        raise UserError(f"{named}: its records cannot be read ({first_line(e)}).") from None


def shown(url: str) -> str:
    """The URL as messages show it: a password in it becomes ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: study() says so, and it holds no password to hide
        return url


def _sqlite_file(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///").split("?")[0]) if url.startswith("sqlite:///") else None
