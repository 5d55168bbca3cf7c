"""The pictures: the test report written after `mnist-lite test`, and the learning curves."""

import csv
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from mnist_lite.cli import main

from helpers import TINY, fails, fit_args, run_folder, tiny_fit


def _is_png(path: Path, min_side: int = 300) -> bool:
    height, width, _ = matplotlib.image.imread(path).shape
    return height >= min_side and width >= min_side


def test_test_writes_the_report_pictures(tiny_checkpoint: Path, data_dir: Path, in_tmp: Path, capsys) -> None:
    main(
        [
            "test",
            "--ckpt_path",
            str(tiny_checkpoint),
            f"--data.data_dir={data_dir}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    out = capsys.readouterr().out
    run = run_folder(out)
    assert run.parent == tiny_checkpoint.parents[1]  # inside the run it evaluated
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "most_confident_errors.png"):
        assert _is_png(run / name), name
    with open(run / "per_class_accuracy.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["digit"]) for r in rows] == list(range(10))
    assert sum(int(r["images"]) for r in rows) == 10_000
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert f"{run / 'confusion_matrix.png'}" in out


def test_curves_plots_a_runs_metrics(data_dir: Path, in_tmp: Path, capsys) -> None:
    main(fit_args(TINY, data_dir, "--trainer.max_epochs=2", "--trainer.log_every_n_steps=2"))
    main(["curves", "--log_dir", "lightning_logs/version_0"])
    assert capsys.readouterr().out.strip().endswith("Wrote lightning_logs/version_0/learning_curves.png")
    assert _is_png(in_tmp / "lightning_logs" / "version_0" / "learning_curves.png")


TRAIN = "train, per logged step: raw (faint) and smoothed"  # the label of the smoothed training curve


def test_curves_draw_lines_within_one_epoch_and_say_what_the_loss_includes() -> None:
    from mnist_lite.training import figures

    rows = [{"step": s, "train_loss": 0.5, "train_acc": 0.9} for s in range(49, 860, 50)]
    rows.append({"step": 859, "val_loss": 0.1, "val_acc": 0.98, "train_loss_epoch": 0.5, "train_acc_epoch": 0.9})
    fig = figures.learning_curves(rows, label_smoothing=0.05)
    acc_ax = fig.axes[1]
    per_step = {line.get_label(): np.asarray(line.get_xdata()).size for line in acc_ax.lines}
    assert per_step[TRAIN] == 17  # 860 steps / 50: a line, not one dot
    assert "label smoothing (0.05)" in fig.get_suptitle()


def test_curves_smooth_the_training_curve_before_its_faint_raw_points_with_the_legend_off_the_data() -> None:
    from mnist_lite.training import figures

    noise = np.random.default_rng(0).normal(0, 0.1, 100)
    rows = [
        {"step": 10 * i, "train_loss": 1 - i / 200 + n, "train_acc": 0.5 + i / 400 + n} for i, n in enumerate(noise)
    ]
    rows.append({"step": 999, "val_loss": 0.4, "val_acc": 0.8})
    fig = figures.learning_curves(rows)
    fig.draw_without_rendering()
    (legend,) = fig.legends
    for ax, metric in zip(fig.axes, ("train_loss", "train_acc")):
        raw = np.array([row[metric] for row in rows if metric in row])
        (smooth,) = [line for line in ax.lines if line.get_label() == TRAIN]
        (faint,) = [line for line in ax.lines if (line.get_alpha() or 1) < 0.5]
        assert np.array_equal(faint.get_ydata(), raw) and np.array_equal(faint.get_xdata(), smooth.get_xdata())
        wiggle = [np.abs(np.diff(values)).mean() for values in (smooth.get_ydata(), raw)]
        assert wiggle[0] < wiggle[1] / 4 and abs(np.mean(smooth.get_ydata() - raw)) < 0.02  # smoother, not shifted
        assert ax.get_legend() is None and not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_curves_of_a_resumed_run_draw_the_whole_history_once(data_dir: Path, in_tmp: Path, capsys, monkeypatch) -> None:
    from mnist_lite.training import figures

    first = tiny_fit(data_dir, "--trainer.log_every_n_steps=1")
    resumed = tiny_fit(data_dir, "--trainer.log_every_n_steps=1", "--trainer.max_epochs=2", "--ckpt_path=last")
    drawn = []
    draw = figures.learning_curves

    def recording(*args):
        drawn.append(args)
        return draw(*args)

    monkeypatch.setattr(figures, "learning_curves", recording)
    main(["curves", "--log_dir", str(resumed)])
    assert capsys.readouterr().out.endswith(f"Wrote {resumed / 'learning_curves.png'}\n")
    rows, _, resumed_at = drawn[0]
    assert [row["step"] for row in rows if "train_loss" in row] == list(range(10))  # 5 steps in each run
    assert resumed_at == [5] and first != resumed
    assert _is_png(resumed / "learning_curves.png")


def test_curves_without_a_log_is_a_clear_error(in_tmp: Path, capsys) -> None:
    assert "--log_dir nowhere is not a folder" in fails(["curves", "--log_dir", "nowhere"], capsys)
    (in_tmp / "empty").mkdir()
    assert "empty/metrics.csv does not exist" in fails(["curves", "--log_dir", "empty"], capsys)
    (in_tmp / "test").mkdir()  # an evaluation's folder inside a run
    (in_tmp / "test" / "metrics.csv").write_text("epoch,step,test_acc,test_loss\n0,9,0.5,1.2\n")
    assert "test/metrics.csv holds no training metrics" in fails(["curves", "--log_dir", "test"], capsys)


def test_curves_of_a_tensorboard_run_says_what_to_use(in_tmp: Path, capsys) -> None:
    (in_tmp / "tb").mkdir()
    (in_tmp / "tb" / "events.out.tfevents.1.host").write_bytes(b"")
    assert "was logged with TensorBoard: curves reads the CSV logger's" in fails(["curves", "--log_dir", "tb"], capsys)


@pytest.mark.slow
def test_importing_the_package_leaves_matplotlibs_backend_alone() -> None:
    script = (
        "import matplotlib, pkgutil, importlib, mnist_lite\n"
        "matplotlib.use('svg')\n"
        "for module in pkgutil.walk_packages(mnist_lite.__path__, 'mnist_lite.'):\n"
        "    if module.name != 'mnist_lite.__main__':  # that one runs the command\n"
        "        importlib.import_module(module.name)\n"
        "import mnist_lite.training.figures, mnist_lite.commands.curves\n"
        "print(matplotlib.get_backend())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "svg"
