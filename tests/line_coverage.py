"""CI's coverage (.ci/run: python -m pytest -p tests.line_coverage): which lines of mnist_lite the tests run, in
every process that runs tests, with the table and the floor in pytest's own summary.

SlipCover, not coverage.py: coverage.py traces every line of every library on Python 3.11, which nearly doubled
the in-process tests' CPU time (CI's whole suite: 633 CPU-s against 480 without it). SlipCover instruments only
the package's own code and removes each probe once it has fired (459 CPU-s). Its own runner (python -m slipcover)
prints the table after pytest's last line and, given a floor, reports without the xdist workers' lines; hence
this plugin, which sends each worker's lines to the controller as pytest-cov does.
"""

import json
from importlib.util import find_spec
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import slipcover

FLOOR = 90.0  # percent of the package's lines, over CI's whole run

# Instrumenting starts here, at the plugin's import: before conftest.py and the test modules import the package.
_spec = find_spec("mnist_lite")  # found, not imported
assert _spec is not None and _spec.origin is not None, "mnist_lite is not installed"
_source = str(Path(_spec.origin).parent)
_measured = slipcover.Slipcover(source=[_source])
slipcover.ImportManager(_measured, slipcover.FileMatcher(sources=[_source])).__enter__()
_from_workers: list[dict] = []
_total: dict = {}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:  # xdist's hook, in the controller
    if "line_coverage" in getattr(node, "workeroutput", {}):  # a worker that crashed sends nothing
        _from_workers.append(json.loads(node.workeroutput["line_coverage"]))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workeroutput"):  # an xdist worker: its lines go to the controller
        session.config.workeroutput["line_coverage"] = json.dumps(_measured.get_coverage())
        return
    _total.update(_measured.get_coverage())
    for lines in _from_workers:
        slipcover.merge_coverage(_total, lines)
    if _total["summary"]["percent_covered"] < FLOOR and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _total:
        return
    table = StringIO()
    slipcover.print_coverage(_total, outfile=table, missing_width=80, skip_covered=True)
    terminalreporter.write_sep("-", "lines of mnist_lite run by the tests (SlipCover)")
    terminalreporter.write(table.getvalue().lstrip("\n") + "\n")
    percent = _total["summary"]["percent_covered"]
    verdict = "reached" if percent >= FLOOR else "NOT reached"
    terminalreporter.write_line(f"Coverage floor of {FLOOR:.0f}% {verdict}: {percent:.2f}% of the lines ran.")
