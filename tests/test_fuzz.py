"""Fuzzing the readers of hostile input: the image decoders, the checkpoint reader and the run-folder reader get
mutated files, the same ones on every machine (a fixed seed and count: a failure is one to reproduce, not one a
faster machine finds). Every case ends in an answer or a one-line refusal, within bounds of time and memory: never
a traceback. Pictures are decoded as predict and serve decode them, in the bounded worker (decoding.py); a mutant
that would cost more than its bound is one more one-line refusal.
MNIST_LITE_FUZZ_SCALE multiplies the counts (1 by default: 6 s for the images, 13 s for checkpoints)."""

import io
import itertools
import os
import random
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lite.boundaries import checkpoints, decoding, images
from mnist_lite.boundaries import run_folders as runs
from mnist_lite.commands.runs import runs as runs_command
from mnist_lite.errors import UserError

from helpers import EXAMPLES

SCALE = float(os.environ.get("MNIST_LITE_FUZZ_SCALE", "1"))
CASE_SECONDS = 5
pytestmark = pytest.mark.slow


def _mutants(seeds: list[bytes], rng: random.Random) -> Iterator[bytes]:
    """Endless mutants of the seed files: flipped bytes, random runs, cuts, repeats and insertions."""
    while True:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            kind = rng.randrange(5)
            if kind == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                data[at : at + 8] = rng.randbytes(8)
            elif kind == 2:
                del data[at:]
            elif kind == 3:
                data[at:at] = data[at : at + rng.randint(1, 64)] * rng.randint(2, 50)
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 16))
            if not data:
                data = bytearray(b"\0")
        yield bytes(data)


def _fuzz(
    seeds: list[bytes], read: Callable[[bytes], object], refusals: tuple[type[Exception], ...], cases: int
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for data in itertools.islice(_mutants(seeds, random.Random(0)), int(cases * SCALE)):
        start = time.monotonic()
        try:
            read(data)
        except refusals as e:
            assert "\n" not in str(e) and len(str(e)) < 1000, str(e)[:2000]
        assert time.monotonic() - start < CASE_SECONDS, data[:64]
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 2**20  # kB: under 1 GB more


def _picture(kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format=kind, **options)
    return buffer.getvalue()


def test_the_image_decoders_answer_or_refuse_every_mutant() -> None:
    seeds = [p.read_bytes() for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg", ".bmp", ".tiff")]
    seeds += [_picture("JPEG", progressive=True), _picture("TIFF", compression="tiff_lzw"), _picture("PNG")]
    decoding.reset()  # a worker of the usual bounds, whatever other tests set
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mutants = itertools.islice(_mutants(seeds, random.Random(0)), int(20_000 * SCALE))
    while chunk := list(itertools.islice(mutants, 100)):  # a round trip to the worker each
        start = time.monotonic()
        over = 0
        for answer in decoding.decode(chunk):
            try:
                images.to_mnist(images.as_tensor(answer))
            except ValueError as e:
                assert "\n" not in str(e) and len(str(e)) < 1000, str(e)[:2000]
                over += str(e).startswith("refused: over the time/memory bound")
        assert time.monotonic() - start < CASE_SECONDS * (1 + over)  # each over the bound costs at most its bound
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # kB: under 1 GB more
    decoding.reset()  # the worker's own memory is bounded by its RLIMIT_AS (768 MiB)


def test_the_checkpoint_reader_answers_or_refuses_every_mutant(tiny_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "mutant.ckpt"

    def read(data: bytes) -> None:
        path.write_bytes(data)
        checkpoints.load_model(path)

    _fuzz([(tiny_run / "checkpoints" / "last.ckpt").read_bytes()], read, (UserError,), cases=5_000)


def test_the_run_folder_reader_lists_every_mutant(tiny_run: Path, tmp_path: Path) -> None:
    """A run folder's config.yaml and metrics.csv mutated: `runs` lists the run, its cells a value or unreadable."""
    folder = tmp_path / "logs" / "version_0"
    folder.mkdir(parents=True)
    seeds = {name: (tiny_run / name).read_bytes() for name in ("config.yaml", "metrics.csv")}
    mutants = {name: _mutants([seed], random.Random(i)) for i, (name, seed) in enumerate(seeds.items())}

    def read(data: bytes) -> None:
        (folder / "config.yaml").write_bytes(next(mutants["config.yaml"]))
        (folder / "metrics.csv").write_bytes(data)
        assert len(runs.find_runs(tmp_path / "logs")) == 1
        runs_command(str(tmp_path / "logs"), full=True)  # every cell of the table, as `runs` shows it

    _fuzz([seeds["metrics.csv"]], read, (), cases=2_000)
