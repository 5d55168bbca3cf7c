"""Lightning's cost over a bare PyTorch loop: one epoch of configs/cpu.yaml, in-process, imports excluded.

Both sides train the same network class on the same in-memory uint8 data, with the same batch size, optimizer,
schedule and loss, then evaluate the same 5,000 validation images. The Lightning side is the project's own fit
(DataModule, LightningModule, CSV logging and checkpoints into a scratch folder; no progress bar). The two are
alternated and repeated; the median ratio is the figure (goal <= 1.15).

    python benchmarks/lightning_vs_bare.py [--repeats 5]
"""

import torch
from torch.nn import functional as F

from mnist_lite.network import MEAN, STD

from common import CPU, SCRATCH, arguments, build, median, quiet, recorded, timed

FIT = ["--config", CPU, "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={SCRATCH}"]


def lightning_epoch() -> float:
    trainer, model, dm = build(*FIT)
    dm.prepare_data()
    dm.setup("fit")
    return timed(lambda: trainer.fit(model, datamodule=dm))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """What the DataModule and the model do to a uint8 batch, written out."""
    return (images[:, None].float() / 255 - MEAN) / STD


def bare_epoch() -> float:
    _, model, dm = build(*FIT)  # the same seeded network, optimizer and schedule settings
    dm.prepare_data()
    dm.setup("fit")
    train, val = dm.splits["train"], dm.splits["val"]
    batch_size = dm.hparams.batch_size
    net = model.net
    optimizer = model.optimizer(net.parameters())
    steps = -(-len(train) // batch_size)
    scheduler = model.scheduler(optimizer, total_steps=steps)

    def run() -> None:
        net.train()
        for index in torch.randperm(len(train)).split(batch_size):
            loss = F.cross_entropy(net(normalize(train.images[index])), train.labels[index], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        net.eval()
        with torch.inference_mode():
            correct = sum(
                (net(normalize(x)).argmax(1) == y).sum() for x, y in zip(val.images.split(1000), val.labels.split(1000))
            )
        assert correct / len(val) > 0.9

    return timed(run)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with recorded(args.json, "lightning_vs_bare"):
        quiet()
        bare, lightning = [], []
        for _ in range(args.repeats):
            bare.append(bare_epoch())
            lightning.append(lightning_epoch())
        ratios = [lt / b for lt, b in zip(lightning, bare)]
        print("| one epoch + validation | median s | runs (s) |\n| --- | --- | --- |")
        print(f"| bare PyTorch loop | {median(bare):.2f} | {', '.join(f'{t:.2f}' for t in bare)} |")
        print(f"| mnist-lite fit (Lightning) | {median(lightning):.2f} | {', '.join(f'{t:.2f}' for t in lightning)} |")
        print(f"\nmedian ratio Lightning/bare: {median(ratios):.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
