"""Scale-out on Lightning's own DDP engine (two CPU processes, gloo): shards, synced metrics, the same accuracy."""

import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_lite.data_source import to_unit_range
from mnist_lite.datamodule import EpochShuffler, MNISTDataModule

from helpers import ROOT, TINY

CPU, DDP = str(ROOT / "configs" / "cpu.yaml"), str(ROOT / "configs" / "ddp_cpu.yaml")
EPOCHS = 1


def _digests(images: torch.Tensor) -> list[str]:
    return [hashlib.md5(image.contiguous().numpy().tobytes()).hexdigest() for image in to_unit_range(images)]


def _cli(cwd: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # rank 1 is relaunched and must find the recorder
    result = subprocess.run(
        [sys.executable, "-m", "mnist_lite", *args, "--trainer.enable_progress_bar=false"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _test_acc(run: Path) -> float:
    with open(run / "metrics.csv") as f:
        return float(next(r for r in csv.DictReader(f) if r.get("test_acc"))["test_acc"])


pytestmark = [pytest.mark.ddp, pytest.mark.slow]


@pytest.fixture(scope="module")
def ddp_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp")
    recorder = '{"class_path": "shard_recorder.ShardRecorder", "init_args": {"folder": "shards"}}'
    _cli(
        cwd,
        "fit",
        "--config",
        CPU,
        "--config",
        DDP,
        f"--data.data_dir={data_dir}",
        f"--trainer.max_epochs={EPOCHS}",
        f"--trainer.callbacks+={recorder}",
        "--trainer.logger.init_args.version=ddp",
    )
    return cwd


def test_each_rank_sees_a_disjoint_shard_and_together_the_whole_set(ddp_run: Path, data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=str(data_dir))
    dm.setup("fit")
    everything = sorted(_digests(dm.splits["train"].images))
    ranks = [json.loads((ddp_run / "shards" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in map(str, range(EPOCHS)):
        rank0, rank1 = ranks[0][epoch], ranks[1][epoch]
        assert len(rank0) == len(rank1) == len(everything) // 2
        assert not set(rank0) & set(rank1)
        assert sorted(rank0 + rank1) == everything


def test_the_shards_are_reshuffled_every_epoch() -> None:
    shards = []
    for epoch in (0, 1):
        ranks = [EpochShuffler(55_000, seed=0, rank=r, world_size=2) for r in (0, 1)]
        for sampler in ranks:
            sampler.set_epoch(epoch)  # as Lightning does at every epoch start
        shards.append([list(s) for s in ranks])
    for rank0, rank1 in shards:
        assert len(rank0) == len(rank1) == 27_500 and sorted(rank0 + rank1) == list(range(55_000))
    assert shards[0][0] != shards[1][0]


def test_ddp_accuracy_matches_one_process_and_metrics_are_synced(
    ddp_run: Path, fitted_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    ckpt = ddp_run / "lightning_logs" / "ddp" / "checkpoints" / "last.ckpt"
    # 55,000 images / (2 ranks x 32) = 860 steps an epoch, each rank on its own 32 images
    assert torch.load(ckpt, weights_only=True)["global_step"] == EPOCHS * 860
    _cli(
        tmp_path,
        "test",
        "--config",
        CPU,
        "--config",
        DDP,
        "--ckpt_path",
        str(ckpt),
        f"--data.data_dir={data_dir}",
        "--trainer.logger.init_args.version=ddp_test",
    )
    _cli(
        tmp_path,
        "test",
        "--config",
        CPU,
        "--ckpt_path",
        str(ckpt),
        f"--data.data_dir={data_dir}",
        "--trainer.logger.init_args.version=single_test",
    )
    ddp_acc, single_acc = (_test_acc(tmp_path / "lightning_logs" / v) for v in ("ddp_test", "single_test"))
    # Each rank tested half of the 10k; the synced metric must be the whole set's accuracy.
    assert ddp_acc == pytest.approx(single_acc, abs=1e-6)

    # The suite's one-process fit of configs/cpu.yaml (one epoch of 64 a step) against this 2 x 32 DDP fit.
    _cli(
        tmp_path,
        "test",
        "--config",
        CPU,
        "--ckpt_path",
        str(fitted_checkpoint),
        f"--data.data_dir={data_dir}",
        "--trainer.logger.init_args.version=single_fit_test",
    )
    assert abs(ddp_acc - _test_acc(tmp_path / "lightning_logs" / "single_fit_test")) <= 0.003


def test_a_run_stopped_mid_epoch_resumes_each_rank_at_its_next_sample(data_dir: Path, tmp_path: Path) -> None:
    """2 gloo processes, 30 batches of 32 each per epoch: stopped after 10, resumed for the other 20."""
    every_10 = (
        '{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
        '"init_args": {"every_n_train_steps": 10, "save_top_k": -1, "filename": "step{step}", '
        '"auto_insert_metric_name": false}}'
    )
    common = [
        "--config",
        str(TINY),
        "--config",
        DDP,
        f"--data.data_dir={data_dir}",
        "--trainer.limit_train_batches=30",
        f"--trainer.callbacks+={every_10}",
    ]
    # What a run killed after step 10 leaves: the step checkpoint, written mid-epoch.
    mid_epoch = "lightning_logs/version_0/checkpoints/step10.ckpt"
    for shards, extra in (("before", ["--trainer.max_steps=10"]), ("after", ["--ckpt_path", mid_epoch])):
        recorder = f'{{"class_path": "shard_recorder.ShardRecorder", "init_args": {{"folder": "{shards}"}}}}'
        _cli(tmp_path, "fit", *common, f"--trainer.callbacks+={recorder}", *extra)
    dm = MNISTDataModule(data_dir=str(data_dir))
    dm.setup("fit")
    train = dm.splits["train"].images
    for rank in (0, 1):
        order = list(EpochShuffler(len(train), seed=0, rank=rank, world_size=2))[: 30 * 32]
        expected = _digests(train[order])
        before = json.loads((tmp_path / "before" / f"rank{rank}.json").read_text())["0"]
        after = json.loads((tmp_path / "after" / f"rank{rank}.json").read_text())["0"]
        assert before == expected[: 10 * 32]
        assert after == expected[10 * 32 :]  # each remaining sample exactly once, in the epoch's order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_on_two_nodes_leaves_one_run_folder(data_dir: Path, tmp_path: Path) -> None:
    """Two "nodes" on loopback, node-rank 0 and 1, as the README's torchrun recipe launches them."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    torchrun += ["--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    fit = ["-m", "mnist_lite", "fit", "--config", str(TINY), "--config", DDP, f"--data.data_dir={data_dir}"]
    fit += ["--trainer.devices=1", "--trainer.num_nodes=2"]
    nodes = [
        subprocess.Popen(
            [*torchrun, f"--node-rank={rank}", *fit],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert outputs[0][0].count("Run folder: ") == 1 and "Run folder" not in outputs[1][0]
