"""Each benchmark runs, on a tiny budget, and records its JSON: so none can rot unseen (mypy checks them too).
They run as scripts, but in the test's process: what they start themselves (fits, servers) still runs apart."""

import json
import os
import runpy
import shutil
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow
NAMES = [
    "accuracy",
    "augmentation",
    "end_to_end",
    "handwriting",
    "inference",
    "lightning_vs_bare",
    "progress_bar",
    "serve",
    "startup",
    "threads",
]


def _arguments(name: str, ckpt: Path, data_dir: Path) -> list[str]:
    """The benchmark's arguments for a run of seconds: those that fit take fit options after their own."""
    tiny = ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    tiny.append(f"--data.data_dir={data_dir}")
    return {
        "accuracy": ["--config", "configs/cpu.yaml", "--seeds", "0", *tiny],
        "augmentation": ["--repeats", "1", "--epochs", "1", *tiny],
        "end_to_end": ["--repeats", "1", "--only", "0", *tiny],
        "handwriting": [str(ckpt), "--limit", "50"],
        "inference": ["--ckpt", str(ckpt), "--calls", "10", "--repeats", "1", *tiny],
        "lightning_vs_bare": ["--repeats", "1", *tiny],
        "progress_bar": ["--repeats", "1", "--rates", "20", *tiny],
        "serve": ["--ckpt", str(ckpt), "--clients", "1", "--workers", "1", "--seconds", "1"],
        "startup": ["--ckpt", str(ckpt), "--repeats", "1"],
        "threads": ["--repeats", "1", "--loads", "idle", *tiny],  # a busy core would slow every other test
    }[name]


def test_every_benchmark_is_smoke_tested() -> None:
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"common", "render", "assignment_pipeline"}
    assert scripts == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_benchmark_runs_and_records(
    name: str, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name == "serve" and shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the serving benchmark's smoke test: apt-get install wrk")
        pytest.skip("the serving benchmark needs wrk: apt-get install wrk")
    out = tmp_path / f"{name}.json"
    script = ROOT / "benchmarks" / f"{name}.py"
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(script.parent))  # as `python benchmarks/NAME.py` has it: `common` imports
    monkeypatch.setattr("sys.argv", [str(script), *_arguments(name, tiny_checkpoint, data_dir), "--json", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    recorded = json.loads(out.read_text())
    assert recorded["benchmark"] == name and recorded["commit"] and recorded["machine"]["cores"] >= 1
    assert any(line.startswith("| ") for line in recorded["output"])  # at least one table
