"""Weight averaging: an EMA of the weights, configured from YAML, is what the checkpoint, test and export use."""

from pathlib import Path

import torch

from mnist_lite.cli import main

from helpers import CONF, TINY, fit_args, newest_run, same_weights

EMA = CONF / "ema.yaml"


def _fit(data_dir: Path, *extra: str) -> Path:
    main(fit_args(TINY, data_dir, *extra))
    return newest_run() / "checkpoints" / "last.ckpt"


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
