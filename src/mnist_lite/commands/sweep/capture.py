"""A trial's fit prints its run folder, its checkpoints and Lightning's notes; the sweep prints one line instead."""

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """What the code inside prints, warns or logs below WARNING is dropped; its errors still rise."""
    logging.disable(logging.INFO)  # Lightning's log handlers hold the real stderr: its notes are dropped by level
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings(action="ignore"):
            yield
    finally:
        logging.disable(logging.NOTSET)
