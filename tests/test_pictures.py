"""The pictures: the test report written after `mnist-lite test`, and the learning curves."""

import csv
from pathlib import Path

import matplotlib.image
import pytest

from conftest import CONF, fit_args
from mnist_lite.cli import main


def _is_png(path: Path, min_side: int = 300) -> bool:
    height, width, _ = matplotlib.image.imread(path).shape
    return height >= min_side and width >= min_side


def test_test_writes_the_report_pictures(fitted_checkpoint: Path, data_dir: Path, in_tmp: Path, capsys) -> None:
    main(["test", "--ckpt_path", str(fitted_checkpoint), f"--data.data_dir={data_dir}", "--trainer.enable_progress_bar=false"])
    run = in_tmp / "lightning_logs" / "version_0"
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "most_confident_errors.png"):
        assert _is_png(run / name), name
    with open(run / "per_class_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["digit"]) for r in rows] == list(range(10))
    assert sum(int(r["images"]) for r in rows) == 10_000
    assert all(0.9 < float(r["accuracy"]) <= 1 for r in rows)
    assert "confusion_matrix.png" in capsys.readouterr().out


def test_curves_plots_a_runs_metrics(data_dir: Path, in_tmp: Path, capsys) -> None:
    main(fit_args(CONF / "tiny.yaml", data_dir, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=2"))
    main(["curves", "--log_dir", "lightning_logs/version_0"])
    assert capsys.readouterr().out.strip().endswith("Wrote lightning_logs/version_0/learning_curves.png")
    assert _is_png(in_tmp / "lightning_logs" / "version_0" / "learning_curves.png")


def test_curves_without_a_log_is_a_clear_error(in_tmp: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["curves", "--log_dir", "nowhere"])
    assert "nowhere/metrics.csv does not exist" in capsys.readouterr().err
