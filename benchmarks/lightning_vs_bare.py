"""Lightning's cost over a bare PyTorch loop: one epoch of configs/cpu.yaml, in-process, imports excluded.

Both sides train the same network class on the same in-memory uint8 data, with the same batch size, optimizer,
schedule and loss, then evaluate the same 5,000 validation images. The Lightning side is the project's own fit
(DataModule, LightningModule, CSV logging and checkpoints into a scratch folder; no progress bar). The two are
alternated and repeated; the median ratio is the figure (goal <= 1.15). Both sides' validation accuracy is
shown, to see that the bare loop does the same work.

    python benchmarks/lightning_vs_bare.py [--repeats 5] [any mnist-lite fit option, --key=value]
"""

import torch
from torch.nn import functional as F

from mnist_lite.network import MEAN, STD

from common import CPU, SCRATCH, arguments, build, median, parse_with_fit_options, quiet, recorded, timed

FIT = ["--config", CPU, "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={SCRATCH}"]


def lightning_epoch(fit: list[str]) -> tuple[float, float]:
    """Seconds for the project's fit, and its validation accuracy."""
    trainer, model, dm = build(*FIT, *fit)
    dm.prepare_data()
    dm.setup("fit")
    seconds = timed(lambda: trainer.fit(model, datamodule=dm))
    return seconds, float(trainer.callback_metrics["val_acc"])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """What the DataModule and the model do to a uint8 batch, written out."""
    return (images[:, None].float() / 255 - MEAN) / STD


def bare_epoch(fit: list[str]) -> tuple[float, float]:
    """Seconds for the same steps in a plain loop, and its validation accuracy."""
    trainer, model, dm = build(*FIT, *fit)  # the same seeded network, optimizer and schedule settings
    dm.prepare_data()
    dm.setup("fit")
    train, val = dm.splits["train"], dm.splits["val"]
    batch_size = dm.hparams.batch_size
    net = model.net
    optimizer = model.optimizer(net.parameters())
    batches = -(-len(train) // batch_size)
    limit = trainer.limit_train_batches  # as Lightning reads it: a count, or a fraction of the epoch
    steps = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    scheduler = model.scheduler(optimizer, total_steps=steps)
    accuracy = [0.0]

    def run() -> None:
        net.train()
        for index in torch.randperm(len(train)).split(batch_size)[:steps]:
            logits = net(normalize(train.images[index]))
            loss = F.cross_entropy(logits, train.labels[index], label_smoothing=model.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        net.eval()
        with torch.inference_mode():
            correct = sum(
                (net(normalize(x)).argmax(1) == y).sum() for x, y in zip(val.images.split(1000), val.labels.split(1000))
            )
        accuracy[0] = float(correct) / len(val)

    return timed(run), accuracy[0]


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_with_fit_options(parser)
    with recorded(args.json, "lightning_vs_bare"):
        quiet()
        runs: dict[str, list[tuple[float, float]]] = {"bare PyTorch loop": [], "mnist-lite fit (Lightning)": []}
        for _ in range(args.repeats):
            runs["bare PyTorch loop"].append(bare_epoch(args.fit))
            runs["mnist-lite fit (Lightning)"].append(lightning_epoch(args.fit))
        print("| one epoch + validation | median s | runs (s) | val accuracy |\n| --- | --- | --- | --- |")
        for name, measured in runs.items():
            seconds = [t for t, _ in measured]
            shown = ", ".join(f"{t:.2f}" for t in seconds)
            print(f"| {name} | {median(seconds):.2f} | {shown} | {median([a for _, a in measured]):.2%} |")
        bare, lightning = ([t for t, _ in m] for m in runs.values())
        ratios = [lt / b for lt, b in zip(lightning, bare)]
        print(f"\nmedian ratio Lightning/bare: {median(ratios):.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
