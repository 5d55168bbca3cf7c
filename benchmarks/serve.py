"""Requests per second and latency of `mnist-lite serve`, against the same work done in-process.

Starts `mnist-lite serve --port 0 --workers W` as users do, then for each client count runs wrk (a C load
generator: `apt-get install wrk`; a Python client would take as much CPU as the server it measures) with that
many keep-alive connections on loopback for --seconds, each posting what the page posts: a 280x280 canvas PNG as
a JSON data URL. Reports requests/s, p50 and p99 latency and failed requests, next to the bare in-process call
(decode, preprocess, model, preview). Goals on 2 cores: p50 <= 5 ms with one client, >= 500 requests/s with 8,
no request failed.

    python benchmarks/serve.py --ckpt lightning_logs/version_0/checkpoints/last.ckpt
"""

import base64
import io
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from mnist_lite.boundaries.checkpoints import load_model
from mnist_lite.serving import app as server

from common import arguments, quiet, recorded, scratch

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()
"""


def canvas_png() -> bytes:
    """A "7" as the page's pad sends it: 280x280 RGBA, opaque, 18-px round strokes of dark ink on white."""
    pad = Image.new("RGBA", (280, 280), "white")
    ImageDraw.Draw(pad).line([(70, 56), (210, 56), (112, 238)], fill="#111", width=18, joint="curve")
    buffer = io.BytesIO()
    pad.save(buffer, format="PNG")
    return buffer.getvalue()


def in_process(ckpt: str, png: bytes, calls: int = 1000) -> tuple[float, float]:
    torch.set_num_threads(1)  # as serve runs
    model = load_model(ckpt)
    latencies = []
    for i in range(calls + 50):
        start = time.perf_counter()
        server.read_digits(model, [("pad", png)])
        if i >= 50:  # after warm-up
            latencies.append(time.perf_counter() - start)
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


def wrk(url: str, script: Path, clients: int, seconds: int) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "5s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"requests": requests, "rate": rate, "p50": ms("50%"), "p99": ms("99%"), "failed": failed}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="serve --workers, one server each")
    parser.add_argument("--seconds", type=int, default=10, help="how long each client count runs")
    args = parser.parse_args()
    with recorded(args.json, "serve"):
        if shutil.which("wrk") is None:
            sys.exit("benchmarks/serve.py needs wrk: apt-get install wrk")
        quiet()
        png = canvas_png()
        p50, p99 = in_process(args.ckpt, png)
        print(f"in-process (decode, preprocess, model, preview): p50 {p50:.2f} ms, p99 {p99:.2f} ms")

        folder = scratch("mnist-lite-serve-bench-")
        body = folder / "body.json"
        body.write_text(json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}))
        script = folder / "post.lua"
        script.write_text(LUA.format(body=body))
        print("\n| workers | clients | requests | requests/s | p50 ms | p99 ms | failed |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for workers in args.workers:
            command = [sys.executable, "-m", "mnist_lite", "serve", "--ckpt_path", args.ckpt, "--port", "0"]
            process = subprocess.Popen([*command, "--workers", str(workers)], stdout=subprocess.PIPE, text=True)
            try:
                assert process.stdout is not None
                line = ""
                while not line.startswith("Serving "):  # after the checkpoint's line
                    line = process.stdout.readline()
                    assert line, "serve ended before it served"
                url = line.split(" at ")[1].split()[0] + "predict"
                wrk(url, script, 2 * workers, 5)  # warm-up: every worker started and ready
                for clients in args.clients:
                    r = wrk(url, script, clients, args.seconds)
                    print(
                        f"| {workers} | {clients} | {r['requests']:.0f} | {r['rate']:.0f} | {r['p50']:.2f} | "
                        f"{r['p99']:.2f} | {r['failed']:.0f} |"
                    )
            finally:
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
