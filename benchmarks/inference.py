"""Inference speed of a fitted checkpoint, in-process with the model loaded.

Single-image latency through the predict path (uint8 image -> [0, 1] pixels -> predict_step -> probabilities),
p50 and p99 over --calls calls (goal p50 <= 0.3 ms); batched throughput at batch 256 and 1,000 (goal
>= 30,000 images/s on 2 cores); and the loop time of `mnist-lite test` over the 10k test set.

    python benchmarks/inference.py --ckpt lightning_logs/version_0/checkpoints/last.ckpt [fit option, --key=value]
"""

import statistics
import time

import torch

from mnist_lite import data_source
from mnist_lite.checkpoints import load_model
from mnist_lite.data_source import to_unit_range

from common import CPU, arguments, build, parse_with_fit_options, quiet, recorded, timed


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the test loop")
    args = parse_with_fit_options(parser)
    with recorded(args.json, "inference"):
        quiet()
        data_source.prepare("data")
        images, _ = data_source.load("data", train=False)
        model = load_model(args.ckpt)

        def predict(batch: torch.Tensor) -> torch.Tensor:
            return model(to_unit_range(batch)).softmax(dim=1)

        latencies = []
        with torch.inference_mode():
            for i in range(200):  # warm-up
                predict(images[i : i + 1])
            for i in range(args.calls):
                image = images[i % len(images)].unsqueeze(0)
                start = time.perf_counter()
                predict(image)
                latencies.append(time.perf_counter() - start)
            latencies.sort()
            p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
            print("| path | speed | |\n| --- | --- | --- |")
            print(f"| single image ({args.calls} calls) | p50 {p50 * 1e3:.3f} ms | p99 {p99 * 1e3:.3f} ms |")
            for batch_size in (256, 1000):
                chunks = images.split(batch_size)

                def one_pass(chunks: tuple[torch.Tensor, ...] = chunks) -> None:
                    for chunk in chunks:
                        predict(chunk)

                rates = [len(images) / timed(one_pass) for _ in range(5)]
                print(
                    f"| batch {batch_size} | {statistics.median(rates):,.0f} images/s (median of 5 passes over 10k) | |"
                )

        trainer, classifier, dm = build("--config", CPU, *args.fit)
        classifier.net.load_state_dict(model.net.state_dict())
        dm.prepare_data()
        dm.setup("test")
        runs = [timed(lambda: trainer.test(classifier, datamodule=dm, verbose=False)) for _ in range(args.repeats)]
        print(f"| mnist-lite test loop, 10k images | {statistics.median(runs):.2f} s (median of {args.repeats}) | |")


if __name__ == "__main__":
    main()
