"""Distillation and weight averaging: the student learns from a frozen teacher and stays the plain network; an
EMA of the weights, configured from YAML, is what its checkpoint, test and export use."""

import hashlib
from pathlib import Path

import pytest
import torch

from mnist_lite.cli import main
from mnist_lite.network import CompactCNN

from helpers import CONF, TINY, fit_args, newest_run, same_weights, weights

EMA = CONF / "ema.yaml"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fit(data_dir: Path, *extra: str) -> Path:
    main(fit_args(TINY, data_dir, *extra))
    return newest_run() / "checkpoints" / "last.ckpt"


def test_the_student_learns_from_the_teacher_and_stays_the_plain_network(
    tiny_run: Path, data_dir: Path, in_tmp: Path, capsys
) -> None:
    teacher = tiny_run / "checkpoints" / "last.ckpt"
    before = _sha(teacher)
    plain = _fit(data_dir)
    unused = _fit(data_dir, f"--model.teacher={teacher}", "--model.distillation=0")
    distilled = _fit(data_dir, f"--model.teacher={teacher}", "--model.distillation=0.7", "--model.temperature=2")
    assert f"Teacher: {teacher} (CompactCNN, 13,266 parameters)" in capsys.readouterr().out
    assert same_weights(weights(plain), weights(unused))  # a term of weight 0 changes nothing
    assert not same_weights(weights(plain), weights(distilled))  # so this difference is the teacher's
    seed_keys = {f"net.{name}" for name in CompactCNN().state_dict()}
    assert set(weights(distilled)) == seed_keys  # no teacher tensors in the student's checkpoint
    assert _sha(teacher) == before


@pytest.mark.parametrize(
    ("option", "expected"),
    [("--model.temperature=0", "model.temperature"), ("--model.distillation=1.5", "model.distillation")],
)
def test_distillation_settings_out_of_range(option: str, expected: str, data_dir: Path, in_tmp: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(fit_args(TINY, data_dir, option))
    assert expected in capsys.readouterr().err
    assert not Path("lightning_logs").exists()


def test_the_ema_weights_are_what_the_checkpoint_test_and_export_use(
    data_dir: Path, in_tmp: Path, capsys, recwarn
) -> None:
    ckpt = _fit(data_dir, "--config", str(EMA), "--trainer.limit_train_batches=20")
    checkpoint = torch.load(ckpt, weights_only=True)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert set(averaged) == set(current) and not same_weights(averaged, current)
    main(["test", "--ckpt_path", str(ckpt), f"--data.data_dir={data_dir}", "--trainer.enable_progress_bar=false"])
    main(["export", "--ckpt_path", str(ckpt), "--format", "state_dict", "--output", "net.pt"])
    exported = torch.load("net.pt", weights_only=True)
    assert same_weights(exported, {k.removeprefix("net."): v for k, v in averaged.items()})
    assert "test_acc" in capsys.readouterr().out
    # Lightning's advice to configure the EMA callback again is for resuming fit, not for test
    assert not [w for w in recwarn if "callbacks used to create the checkpoint" in str(w.message)]
