"""Inference speed of a fitted checkpoint, in-process with the model loaded.

Single-image latency through the predict path (uint8 image -> [0, 1] pixels -> predict_step -> probabilities),
p50 and p99 over --calls calls (goal p50 <= 0.3 ms); batched throughput at batch 256 and 1,000 (goal
>= 30,000 images/s on 2 cores); and the loop time of `mnist-lite test` over the 10k test set.

    python benchmarks/inference.py --ckpt lightning_logs/version_0/checkpoints/last.ckpt [fit option, --key=value]

With --pictures N, also the time to read N MNIST test images saved as PNGs (DigitFiles, as `mnist-lite predict`
reads a folder: decoded in the bounded worker of decoding.py) and a whole `mnist-lite predict` over that folder and
over examples/digits; with --old SRC, each beside the same run of another checkout's src/ (the commit before the
worker: git clone -q . /tmp/old && git -C /tmp/old checkout -q 7611627), alternating, medians. With --bounds, the
hostile pictures of issue 38 at full size (--bounds-scale 1: 60 MB each): each one's time and peak memory through
`predict`'s path, and /health's latency in `mnist-lite serve` while it is posted.
"""

import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import torch
from PIL import Image

from mnist_lite.boundaries.checkpoints import load_model
from mnist_lite.training import data_source
from mnist_lite.training.data_source import to_unit_range

from common import CPU, ROOT, arguments, build, parse_with_fit_options, quiet, recorded, scratch, timed

READ_FOLDER = """
import sys, time
from mnist_lite.boundaries.images import DigitFiles
files = DigitFiles(sys.argv[1])
start = time.perf_counter()
for first in range(0, len(files), 1000):
    files.__getitems__(list(range(first, min(first + 1000, len(files)))))
print(time.perf_counter() - start)
"""
# One hostile picture through predict's path, in a process of its own: its time, the process's own peak memory
# over what it had before, and its children's (the decoding worker's) peak, in MB.
ONE_PICTURE = """
import resource, sys, time
from mnist_lite.boundaries import decoding
from mnist_lite.boundaries.images import DigitFiles
files = DigitFiles(sys.argv[1])
files.__getitems__([0])  # the worker started, on an ordinary picture
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
_, sources = files.__getitems__([1])
seconds = time.perf_counter() - start
decoding.reset()
print(seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, sources[0][2][:60], sep="\t")
"""


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the test loop")
    parser.add_argument("--pictures", type=int, default=0, help="also time reading this many PNGs, and predict")
    parser.add_argument("--old", help="another checkout's src/ to time beside this one")
    parser.add_argument("--bounds", action="store_true", help="time the hostile pictures of issue 38")
    parser.add_argument("--bounds-scale", type=float, default=1.0, help="their size, as a fraction of 60 MB")
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
        if args.pictures:
            pictures(images[: args.pictures], args.ckpt, args.old, args.repeats)
        if args.bounds:
            bounds(args.ckpt, args.bounds_scale)


def _run(src: str, command: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": src}
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, out


def pictures(images: torch.Tensor, ckpt: str, old: str | None, repeats: int) -> None:
    folder = scratch("mnist-lite-pictures-")
    for i, image in enumerate(images):
        Image.fromarray(image.numpy()).save(folder / f"{i:05d}.png")
    sources = {"this": str(ROOT / "src"), **({"old": old} if old else {})}
    predict = [
        sys.executable,
        "-m",
        "mnist_lite",
        "predict",
        "--ckpt_path",
        ckpt,
        "--trainer.enable_progress_bar=false",
    ]
    cases = {
        f"read {len(images):,} PNGs (DigitFiles)": [sys.executable, "-c", READ_FOLDER, str(folder)],
        f"mnist-lite predict, {len(images):,} PNGs": [*predict, "--data.predict_path", str(folder)],
        "mnist-lite predict, examples/digits": [*predict, "--data.predict_path", str(ROOT / "examples" / "digits")],
    }
    print(f"\n| {len(images):,} pictures (median of {repeats}) | " + " | ".join(sources) + " |")
    print("| --- |" + " --- |" * len(sources))
    for name, command in cases.items():
        times: dict[str, list[float]] = {label: [] for label in sources}
        for _ in range(repeats):
            for label, src in sources.items():  # alternating, so a busy moment falls on both
                seconds, out = _run(src, command)
                times[label].append(float(out.split()[-1]) if name.startswith("read") else seconds)
        print(f"| {name} | " + " | ".join(f"{statistics.median(t):.2f} s" for t in times.values()) + " |")


def _hostile(scale: float) -> dict[str, bytes]:
    """Issue 38's pictures: each cost 8 to 34 s and up to 2.9 GB in 7611627's predict at 60 MB."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_predict as t  # the same makers as the regression tests

    size = int(60_000_000 * scale)
    return {
        "jpeg_app1_markers.jpg": t._jpeg_of_empty_markers(0xE1, size),
        "tiff_strip_per_row.tif": t.tiff_of_a_strip_per_row(size // 9),
        "jpeg_com_markers.jpg": t._jpeg_of_empty_markers(0xFE, size),
        "bmp_rle8_empty_pairs.bmp": t._bmp_of_empty_rle8_pairs(size),
        "png_text_chunks.png": t._png_of_text_chunks(size // 14),
    }


def bounds(ckpt: str, scale: float) -> None:
    seven = (ROOT / "examples" / "digits" / "7_dark_on_light_120x160.png").read_bytes()
    command = [sys.executable, "-m", "mnist_lite", "serve", "--ckpt_path", ckpt, "--port", "0"]
    server = subprocess.Popen([*command, "--max_upload_mb", "64"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = ""
        while not line.startswith("Serving "):
            line = server.stdout.readline()
        url = line.split(" at ")[1].split()[0]
        print(
            "\n| hostile picture | MB | predict: time | its memory | worker's peak | serve: answer | time | "
            "/health p50 | /health max | predict's error row |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, data in _hostile(scale).items():
            folder = scratch("mnist-lite-bounds-")
            (folder / "0.png").write_bytes(seven)
            (folder / f"1{name}").write_bytes(data)
            _, out = _run(str(ROOT / "src"), [sys.executable, "-c", ONE_PICTURE, str(folder)])
            seconds, memory, worker, error = out.strip().split("\t")
            status, took, waits = _post(url, name, data)
            print(
                f"| {name} | {len(data) / 1e6:.0f} | {float(seconds):.2f} s | {float(memory):.0f} MB | "
                f"{float(worker):.0f} MB | {status} | {took:.2f} s | {statistics.median(waits) * 1e3:.1f} ms | "
                f"{max(waits) * 1e3:.1f} ms | {error} |"
            )
    finally:
        server.terminate()
        server.wait()


def _post(url: str, name: str, data: bytes) -> tuple[int, float, list[float]]:
    """POST one picture as a multipart upload, polling /health every 20 ms meanwhile."""
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="' + name.encode() + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--x--\r\n"
    )
    request = urllib.request.Request(url + "predict", body, {"content-type": "multipart/form-data; boundary=x"})
    answer: list[int] = []

    def post() -> None:
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                answer.append(reply.status)
        except urllib.error.HTTPError as e:
            answer.append(e.code)

    waits, thread = [], threading.Thread(target=post)
    start = time.perf_counter()
    thread.start()
    while thread.is_alive():
        begun = time.perf_counter()
        with urllib.request.urlopen(url + "health", timeout=10) as reply:
            reply.read()
        waits.append(time.perf_counter() - begun)
        time.sleep(0.02)
    return answer[0], time.perf_counter() - start, waits


if __name__ == "__main__":
    main()
