"""Scale-out on Lightning's own DDP engine (two CPU processes, gloo): shards, synced metrics, the same accuracy."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from mnist_lite.datamodule import MNISTDataModule, normalize

CPU, DDP = str(ROOT / "configs" / "cpu.yaml"), str(ROOT / "configs" / "ddp_cpu.yaml")
EPOCHS = 2


def _cli(cwd: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # rank 1 is relaunched and must find the recorder
    result = subprocess.run([sys.executable, "-m", "mnist_lite", *args, "--trainer.enable_progress_bar=false"],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _test_acc(run: Path) -> float:
    with open(run / "metrics.csv") as f:
        return float(next(r for r in csv.DictReader(f) if r.get("test_acc"))["test_acc"])


@pytest.fixture(scope="module")
def ddp_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp")
    recorder = '{"class_path": "shard_recorder.ShardRecorder", "init_args": {"folder": "shards"}}'
    _cli(cwd, "fit", "--config", CPU, "--config", DDP, f"--data.data_dir={data_dir}", f"--trainer.max_epochs={EPOCHS}",
         f"--trainer.callbacks+={recorder}", "--trainer.logger.init_args.version=ddp")
    return cwd


def test_each_rank_sees_a_disjoint_shard_and_together_the_whole_set(ddp_run: Path, data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(data_dir))
    dm.setup("fit")
    train = normalize(dm.splits["train"].images)
    everything = sorted(hashlib.md5(image.contiguous().numpy().tobytes()).hexdigest() for image in train)
    ranks = [json.loads((ddp_run / "shards" / f"rank{r}.json").read_text()) for r in (0, 1)]
    orders = []
    for epoch in map(str, range(EPOCHS)):
        rank0, rank1 = ranks[0][epoch], ranks[1][epoch]
        assert len(rank0) == len(rank1) == len(everything) // 2
        assert not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == everything
        orders.append(rank0)
    assert orders[0] != orders[1]  # a new shuffle every epoch


def test_ddp_accuracy_matches_one_process_and_metrics_are_synced(ddp_run: Path, data_dir: Path, tmp_path: Path) -> None:
    ckpt = ddp_run / "lightning_logs" / "ddp" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == EPOCHS * 860  # 2 x 430 steps of 2 x 32 images
    _cli(tmp_path, "test", "--config", CPU, "--config", DDP, "--ckpt_path", str(ckpt), f"--data.data_dir={data_dir}",
         "--trainer.logger.init_args.version=ddp_test")
    _cli(tmp_path, "test", "--config", CPU, "--ckpt_path", str(ckpt), f"--data.data_dir={data_dir}",
         "--trainer.logger.init_args.version=single_test")
    ddp_acc, single_acc = (_test_acc(tmp_path / "lightning_logs" / v) for v in ("ddp_test", "single_test"))
    # Each rank tested half of the 10k; the synced metric must be the whole set's accuracy.
    assert ddp_acc == pytest.approx(single_acc, abs=1e-6)

    _cli(tmp_path, "fit", "--config", CPU, f"--data.data_dir={data_dir}", f"--trainer.max_epochs={EPOCHS}",
         "--trainer.logger.init_args.version=single")
    _cli(tmp_path, "test", "--config", CPU, "--ckpt_path", "lightning_logs/single/checkpoints/last.ckpt",
         f"--data.data_dir={data_dir}", "--trainer.logger.init_args.version=single_fit_test")
    assert abs(ddp_acc - _test_acc(tmp_path / "lightning_logs" / "single_fit_test")) <= 0.003
