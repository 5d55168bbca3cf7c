"""Checkpoints are data: nothing named inside one is imported, called or built unless it is one of the project's
networks or the user's config names it, and what one can cost is bounded before it is paid. The hostile variants go
through the checkpoint reader itself; then one whole command per entry point shows the same refusal in one line, with
nothing written."""

import io
import math
import os
import pickle
import re
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from mnist_lite.boundaries import checkpoints
from mnist_lite.cli import main
from mnist_lite.errors import UserError
from mnist_lite.network import CompactCNN
from mnist_lite.training.callbacks.start_from import StartFrom
from mnist_lite.training.module import MNISTClassifier

from helpers import CPU, EXAMPLES, TINY, fails, fit_args, main_in, newest_run, once, run_cli
from trojan import MARKER_ENV


@pytest.fixture(scope="module")
def good(tiny_run: Path) -> dict:
    return torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)


def _save(checkpoint: dict, path: Path) -> Path:
    torch.save(checkpoint, path)
    return path


def _load(path: Path) -> None:
    """What every entry point does with a checkpoint before using it."""
    checkpoints.load_model(path)


# ---- hyperparameters that name code: every way jsonargparse or Lightning would resolve one ----


def _code_naming_hparams(marker: Path) -> dict[str, dict]:
    touch = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    run = {"class_path": "builtins.exec", "init_args": {"source": f"open({str(marker)!r}, 'w')"}}
    return {
        "optimizer-class_path": {"optimizer": touch},
        "scheduler-class_path": {"scheduler": run},
        "optimizer-callable-string": {"optimizer": "os.system"},
        "lambda-schedule": {
            "scheduler": {"class_path": "torch.optim.lr_scheduler.LambdaLR", "init_args": {"lr_lambda": "os.system"}}
        },
        "_instantiator": {"_instantiator": "builtins.exec"},
        "_class_path": {"_class_path": "trojan.AlwaysThree"},
        "nested-init_args": {"net": {"class_path": "mnist_lite.network.CompactCNN", "init_args": {"hidden": touch}}},
        "dotted-init_arg": {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": "os.getcwd"}}},
        "trojan-network": {"net": {"class_path": "trojan.AlwaysThree", "init_args": {}}},
        "unknown-key": {"callback": touch},
    }


@pytest.mark.parametrize("variant", list(_code_naming_hparams(Path("m"))))
def test_hyperparameters_naming_code_run_none_of_it(variant: str, good: dict, tmp_path: Path, monkeypatch) -> None:
    """Only ``net`` is ever taken from a checkpoint: naming code there is refused; anywhere else it is never read."""
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    sys.modules.pop("trojan", None)  # so that an import would run the module again
    good = {**good, "hyper_parameters": {**good["hyper_parameters"], **_code_naming_hparams(marker)[variant]}}
    path = _save(good, tmp_path / "hostile.ckpt")
    if variant in ("nested-init_args", "trojan-network"):
        with pytest.raises(UserError, match=r"refusing .*: hyperparameter net"):
            _load(path)
    else:
        _load(path)
    assert not marker.exists() and "trojan" not in sys.modules


# ---- files that are not what they claim, and what each would cost ----


class _WritesMarker:
    """Unpickled unsafely, this runs code: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _rezip(data: bytes, path: Path, pickle_bytes: bytes | None = None, compress: bool = False) -> Path:
    """The archive of ``data`` again, its data.pkl replaced or every entry deflated."""
    source = zipfile.ZipFile(io.BytesIO(data))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            content = pickle_bytes if pickle_bytes is not None and info.filename.endswith("data.pkl") else None
            target.writestr(info.filename, content if content is not None else source.read(info))
    return path


def _bytes(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def _list_bomb() -> list:
    x: list = [0]
    for _ in range(9):
        x = [x] * 10  # a billion leaves, shared: a few hundred bytes pickled
    return x


def _hostile(kind: str, good: dict, folder: Path) -> tuple[Path, str]:
    """A hostile or broken checkpoint of each kind, and what its refusal says."""
    path = folder / f"{kind}.ckpt"
    state = dict(good["state_dict"])
    if kind == "pickle-runs-code":
        return _save({**good, "payload": _WritesMarker(folder / "marker")}, path), "it holds more than tensors"
    if kind == "device-mesh":  # Lightning adds it to torch's own weights-only allow-list; torch.load would listen
        mesh = b"\x80\x02ctorch.distributed.device_mesh\nDeviceMesh\nq\x00)\x81q\x01."
        return _rezip(_bytes(good), path, mesh), "it holds more than tensors"
    if kind == "stack-global":
        computed = pickle.dumps(print, protocol=4)  # STACK_GLOBAL of builtins.print
        return _rezip(_bytes(good), path, computed), "it holds more than tensors"
    if kind == "deflate-bomb":
        return _rezip(_bytes(good), path, compress=True), "is compressed; torch.save stores them"
    if kind == "truncated":
        data = _bytes(good)
        path.write_bytes(data[: len(data) // 2])
        return path, "not a PyTorch zip archive"
    if kind == "damaged-entry":  # a byte of data.pkl changed where the archive stores it: its CRC no longer holds
        damaged = bytearray(_bytes(good))
        damaged[damaged.index(b"\x80\x02")] ^= 0xFF  # data.pkl's first byte: pickle protocol 2
        path.write_bytes(damaged)
        return path, "not a PyTorch zip archive"
    if kind in ("zip-version-from-the-future", "encrypted-entry"):  # fields of every central directory entry
        offset, value = (6, 144) if kind == "zip-version-from-the-future" else (8, 1)  # zip 14.4 on; flag bit 0
        patched = bytearray(_bytes(good))
        for entry in re.finditer(b"PK\x01\x02", patched):
            patched[entry.start() + offset] |= value
        path.write_bytes(patched)
        return path, "not a PyTorch zip archive"
    if kind == "missing-storage":  # the walk passes, and torch finds no bytes for a tensor it names
        data = _bytes(good)
        source = zipfile.ZipFile(io.BytesIO(data))
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
            for info in source.infolist():
                if not info.filename.endswith("/data/0"):
                    target.writestr(info.filename, source.read(info))
        return path, "is not a readable checkpoint (RuntimeError: "
    if kind == "empty":
        path.write_bytes(b"")
        return path, "is empty (0 bytes)"
    if kind == "text":
        path.write_text("# mnist-lite\n")
        return path, "not a PyTorch zip archive (another kind of file, or cut short). Pass a .ckpt that fit wrote"
    if kind == "expand-bomb":  # 2**31 floats that share one: 8 GB once anything touches them
        state["net.fc1.weight"] = torch.zeros(1).expand(2**31)
        return _save({**good, "state_dict": state}, path), "net.fc1.weight is of 2,147,483,648 elements"
    if kind == "complex-nan":
        state["net.fc1.weight"] = torch.full((32, 392), complex(math.nan, 0))
        return _save({**good, "state_dict": state}, path), "net.fc1.weight is of dtype torch.complex64"
    if kind == "float8":
        state["net.fc1.weight"] = torch.zeros(32, 392, dtype=torch.float8_e4m3fn)
        return _save({**good, "state_dict": state}, path), "net.fc1.weight is of dtype torch.float8_e4m3fn"
    if kind == "sparse":
        state["net.fc1.weight"] = torch.zeros(32, 392).to_sparse()
        return _save({**good, "state_dict": state}, path), "net.fc1.weight is a torch.sparse_coo tensor"
    if kind == "negative-variance":
        state["net.bn1.running_var"] = -torch.ones(4)
        return _save({**good, "state_dict": state}, path), "net.bn1.running_var holds negative variances"
    if kind == "nan":
        state["net.fc1.weight"] = state["net.fc1.weight"].clone()
        state["net.fc1.weight"][0, 0] = math.nan
        return _save({**good, "state_dict": state}, path), "non-finite weights (NaN or inf in net.fc1.weight)"
    if kind == "other-channels":
        state = {f"net.{k}": v for k, v in CompactCNN(channels=(6, 12)).state_dict().items()}
        return _save({**good, "state_dict": state}, path), "net.conv1.weight (6, 1, 3, 3) vs (4, 1, 3, 3)"
    if kind == "huge-network":  # 392 x 3e9 floats, were the network built before its shapes were compared
        hparams = {**good["hyper_parameters"], "net": {"class_path": "mnist_lite.network.CompactCNN"}}
        hparams["net"]["init_args"] = {"hidden": 3_000_000_000}
        return _save({**good, "hyper_parameters": hparams}, path), "net.fc1.weight (32, 392) vs (3000000000, 392)"
    if kind == "list-bomb-hparams":
        hparams = {**good["hyper_parameters"], "label_smoothing": _list_bomb()}
        return _save({**good, "hyper_parameters": hparams}, path), "more than 200,000 values"
    if kind == "rng-state":
        return _save({**good, "torch_rng_state": torch.zeros(3)}, path), "torch_rng_state is not a random generator"
    if kind == "lightning-version":
        return _save({**good, "pytorch-lightning_version": "x" * 10_000}, path), "is not a version"
    if kind == "lr-schedulers":
        return _save({**good, "lr_schedulers": "every step"}, path), "lr_schedulers = 'every step' is not a list"
    if kind == "negative-step":
        return _save({**good, "global_step": -5}, path), "global_step = -5 is negative"
    if kind == "pickle-over-its-cap":  # torch's reader would build about 200 bytes of lists per byte of it
        return _rezip(_bytes(good), path, b"\x80\x02](" + b"]" * 300_000 + b"e."), "its pickle is over 256 KiB"
    if kind == "directory-of-20k-entries":  # parsed whole by zipfile before a single entry is counted
        with zipfile.ZipFile(path, "w") as archive:
            for i in range(20_000):
                archive.writestr(f"archive/data/{i}", b"")
        return path, "its archive's directory is larger than 4,096 entries take"
    if kind == "callbacks-keyed-by-number":
        return _save({**good, "callbacks": {1: {}}}, path), "field callbacks is not a mapping of names to states"
    if kind in ("no-lightning-version", "lightning-0-version"):  # Lightning would migrate it, and fail midway
        old = {key: value for key, value in good.items() if key != "pytorch-lightning_version"}
        old |= {"pytorch-lightning_version": "0.0.1"} if kind == "lightning-0-version" else {}
        return _save(old, path), "is not a version of Lightning 2"
    if kind == "counter-past-int64":  # Lightning adds to its counters as 64-bit integers, and overflows
        loops = {"fit_loop": {"epoch_progress": {"total": {"completed": 2**63 - 1}}}}
        return _save({**good, "loops": loops}, path), "= 9223372036854775807 is larger than any count or setting"
    if kind == "a-layer-of-no-channels":  # built on the meta device it has shapes; no image goes through it
        net = {"class_path": "mnist_lite.network.CompactCNN", "init_args": {"channels": [0, 8]}}
        with warnings.catch_warnings(action="ignore"):  # torch's: initialising zero-element tensors is a no-op
            state = {f"net.{k}": v for k, v in CompactCNN(channels=(0, 8)).state_dict().items()}
        checkpoint = {**good, "state_dict": state, "hyper_parameters": {**good["hyper_parameters"], "net": net}}
        return _save(checkpoint, path), "cannot build a network"
    if kind == "float64-past-float32":  # finite as saved, inf once the network holds it
        state = {k: v.double() * 1e300 if v.is_floating_point() else v for k, v in state.items()}
        return _save({**good, "state_dict": state}, path), "non-finite weights"
    raise ValueError(kind)


KINDS = [
    "pickle-runs-code",
    "device-mesh",
    "stack-global",
    "deflate-bomb",
    "truncated",
    "damaged-entry",
    "zip-version-from-the-future",
    "encrypted-entry",
    "missing-storage",
    "empty",
    "text",
    "expand-bomb",
    "complex-nan",
    "float8",
    "sparse",
    "negative-variance",
    "nan",
    "other-channels",
    "huge-network",
    "list-bomb-hparams",
    "rng-state",
    "lightning-version",
    "lr-schedulers",
    "negative-step",
    "pickle-over-its-cap",
    "directory-of-20k-entries",
    "callbacks-keyed-by-number",
    "no-lightning-version",
    "lightning-0-version",
    "counter-past-int64",
    "a-layer-of-no-channels",
    "float64-past-float32",
]


# What torch itself warns while reading these, before the reader refuses them: expected, so filtered here.
TORCH_WARNS = {
    "stack-global": "ignore:Detected pickle protocol:UserWarning",
    "sparse": "ignore:Validating sparse tensor invariants:UserWarning",
}


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.filterwarnings(TORCH_WARNS[k])) if k in TORCH_WARNS else k for k in KINDS],
)
def test_a_hostile_or_broken_checkpoint_is_refused_in_one_line(kind: str, good: dict, tmp_path: Path) -> None:
    path, expected = _hostile(kind, good, tmp_path)
    start = time.monotonic()
    with pytest.raises(UserError) as refused:
        _load(path)
    message = str(refused.value)
    assert expected in message and "\n" not in message and len(message) < 600
    assert time.monotonic() - start < 5
    assert not (tmp_path / "marker").exists()


COST = """
import resource, sys
from mnist_lite.boundaries import checkpoints
from mnist_lite.errors import UserError
checkpoints.load_model(sys.argv[1])  # a good one: the baseline of torch and a model
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[2:]:
    try:
        checkpoints.load_model(path)
    except UserError:
        pass
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow
def test_every_hostile_checkpoint_together_costs_little_memory(good: dict, tiny_run: Path, tmp_path: Path) -> None:
    paths = [str(_hostile(kind, good, tmp_path)[0]) for kind in KINDS]
    done = subprocess.run(
        [sys.executable, "-c", COST, str(tiny_run / "checkpoints" / "last.ckpt"), *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 200  # MB above loading a good checkpoint; the bombs would take GBs


def test_a_data_loaders_64_bit_seed_is_no_counter(good: dict, tmp_path: Path) -> None:
    """With num_workers > 0 a StatefulDataLoader saves its random 64-bit base seed: a checkpoint like any other."""
    state = {"train_loader": {"_snapshot": {"_main_snapshot": {"_base_seed": 883951781600517636}}}}
    checkpoints.read(_save({**good, "MNISTDataModule": state}, tmp_path / "workers.ckpt"))


def test_an_archive_with_bytes_after_its_end_record_is_refused_before_zipfile_parses_it(
    good: dict, tmp_path: Path
) -> None:
    """zipfile would search back for the record, parsing a directory of any size first."""
    path = tmp_path / "trailing.ckpt"
    path.write_bytes(_bytes(good) + b"\0")
    with pytest.raises(UserError, match="not a PyTorch zip archive"):
        checkpoints.read(path)


def test_special_files_are_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.ckpt"
    os.mkfifo(fifo)
    for path, expected in ((fifo, "is a FIFO"), (Path("/dev/zero"), "is a device"), (tmp_path, "is a folder")):
        with pytest.raises(UserError, match=expected):
            checkpoints.read(path)


# ---- one whole command per entry point: the same refusal, in one line, with nothing written ----

ENTRY_POINTS = {
    "validate": ["validate", "--ckpt_path"],
    "test": ["test", "--ckpt_path"],
    "predict": ["predict", "--data.predict_path", str(EXAMPLES), "--ckpt_path"],
    "fit": ["fit", "--trainer.max_epochs=2", "--ckpt_path"],
    "export": ["export", "--format", "onnx", "--output", "model.onnx", "--ckpt_path"],
    "serve": ["serve", "--port", "0", "--ckpt_path"],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_refuses_in_one_line_and_writes_nothing(
    entry: str, good: dict, data_dir: Path, in_tmp: Path, capsys
) -> None:
    path = _save({**good, "payload": _WritesMarker(in_tmp / "marker")}, in_tmp / "hostile.ckpt")
    args = [*ENTRY_POINTS[entry], str(path)]
    if entry not in ("export", "serve"):
        args.append(f"--data.data_dir={data_dir}")
    err = fails(args, capsys, max_lines=1)
    assert "refusing" in err and "it holds more than tensors" in err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["hostile.ckpt"]


@pytest.mark.parametrize("init_args", [{"hidden": "abc"}, {1: 2}, {"channels": []}], ids=["text", "int-key", "empty"])
def test_network_settings_no_network_takes_are_the_checkpoints_fault_not_the_command_lines(
    init_args: dict, good: dict, data_dir: Path, in_tmp: Path, capsys
) -> None:
    net = {"class_path": "mnist_lite.network.CompactCNN", "init_args": init_args}
    path = _save({**good, "hyper_parameters": {**good["hyper_parameters"], "net": net}}, in_tmp / "odd.ckpt")
    with pytest.raises(SystemExit) as exit:
        main(["validate", "--ckpt_path", str(path), f"--data.data_dir={data_dir}"])
    err = capsys.readouterr().err
    assert exit.value.code == 1 and f"refusing {path}: its network settings" in err and "--help" not in err, err


def test_a_fit_that_starts_from_a_hostile_checkpoint_refuses_it_in_one_line(good: dict, in_tmp: Path) -> None:
    path = _save({**good, "payload": _WritesMarker(in_tmp / "marker")}, in_tmp / "hostile.ckpt")
    with pytest.raises(UserError, match=r"^StartFrom\.weights: refusing .*it holds more than tensors[^\n]*$"):
        StartFrom(str(path)).setup(None, MNISTClassifier(), "fit")
    assert not (in_tmp / "marker").exists()


def test_resuming_from_a_training_state_of_another_layout_is_one_line(
    good: dict, data_dir: Path, in_tmp: Path, capsys
) -> None:
    loops = {**good["loops"], "fit_loop": {"state_dict": {}, "epoch_progress": "three"}}
    path = _save({**good, "loops": loops}, in_tmp / "odd.ckpt")
    err = fails(["fit", "--config", str(TINY), "--ckpt_path", str(path), f"--data.data_dir={data_dir}"], capsys)
    assert "refusing" in err and "loops.fit_loop" in err and "it cannot resume this run" in err


def test_the_users_own_config_may_name_its_network(good: dict, data_dir: Path, in_tmp: Path, capsys) -> None:
    """A class the user names is the user's code: the same class in the checkpoint is then accepted."""
    hparams = {**good["hyper_parameters"], "net": {"class_path": "trojan.AlwaysThree", "init_args": {}}}
    _save({**good, "hyper_parameters": hparams}, in_tmp / "own.ckpt")
    main(["test", "--ckpt_path", "own.ckpt", "--model.net=trojan.AlwaysThree", f"--data.data_dir={data_dir}"])
    assert "test_acc" in capsys.readouterr().out


@pytest.mark.slow
def test_a_network_too_large_to_build_costs_nothing_as_a_program(good: dict, in_tmp: Path) -> None:
    path, _ = _hostile("huge-network", good, in_tmp)
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_lite", "test", "--ckpt_path", str(path)],
        cwd=in_tmp,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    assert process.stderr is not None
    err = process.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 1
    assert "does not match the network it describes" in err
    assert usage.ru_maxrss < 3 * 2**20  # kB: torch itself takes about 1 GB


# ---- configs: trusted code, but bounded in what they cost ----

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize("kind", ["alias-bomb", "huge"])
def test_config_that_would_expand_without_bound_fails_fast(kind: str, in_tmp: Path, capsys) -> None:
    if kind == "alias-bomb":
        text, expected = BILLION_LAUGHS, "values through its aliases, more than the 100,000 allowed"
    else:
        text = "data:\n  augment:\n    affine:\n      degrees: [" + ", ".join(["1"] * 2_000_000) + "]\n"
        text, expected = text, "more than the 1,000,000 allowed"
    (in_tmp / "bad.yaml").write_text(text)
    start = time.monotonic()
    err = fails(["fit", "--config", "bad.yaml"], capsys)
    assert expected in err
    assert time.monotonic() - start < 30


def test_config_may_not_name_a_denied_import_path(in_tmp: Path, capsys) -> None:
    (in_tmp / "bad.yaml").write_text(
        f"model:\n  optimizer:\n    class_path: os.system\n    init_args: {{command: touch {in_tmp / 'marker'}}}\n"
    )
    err = fails(["fit", "--config", "bad.yaml"], capsys)
    assert "model.optimizer: importing 'os.system' is not allowed" in err
    assert not (in_tmp / "marker").exists()


def test_a_config_from_a_pipe_is_read_as_process_substitution_gives_it(in_tmp: Path, capsys) -> None:
    # Configs are code the user writes: `--config <(...)` and `--config /dev/stdin` are pipes, and they work.
    os.mkfifo(in_tmp / "piped.yaml")
    writer = threading.Thread(target=(in_tmp / "piped.yaml").write_text, args=("trainer:\n  max_epochs: 7\n",))
    writer.start()
    with pytest.raises(SystemExit) as exited:
        main(["fit", "--config", "piped.yaml", "--print_config"])
    writer.join(timeout=10)
    assert exited.value.code == 0 and "max_epochs: 7" in capsys.readouterr().out


@pytest.mark.slow
def test_refusal_as_a_program(good: dict, in_tmp: Path) -> None:
    hparams = {**good["hyper_parameters"], "net": {"class_path": "os.system", "init_args": {"command": "touch m"}}}
    _save({**good, "hyper_parameters": hparams}, in_tmp / "hostile.ckpt")
    result = run_cli(in_tmp, "test", "--ckpt_path", "hostile.ckpt")
    assert result.returncode == 1 and not (in_tmp / "m").exists()
    assert result.stderr.strip().splitlines()[-1] == (
        "mnist-lite: error: refusing hostile.ckpt: hyperparameter net.class_path = 'os.system' is not one of the "
        "project's networks or your config's."
    )


# ---- the archive: the bytes checked are the bytes loaded ----


def _two_directories(good: dict) -> bytes:
    """One file, two archives: zipfile, which honours bytes before an archive, sees the good checkpoint; torch's
    reader, which does not, sees one holding a global that Lightning adds to torch's weights-only allow-list."""
    from torch.distributed.tensor.placement_types import Replicate

    padding = "x" * (2 * len(_bytes(good)))  # the evil archive's entries must outlast the good one's
    evil = _bytes({**good, "padding": padding, "evil": Replicate()})
    honest = _bytes({**good, "padding": ""})
    evil_end, honest_end = (data.rindex(b"PK\x05\x06") for data in (evil, honest))
    evil_dir, honest_dir = (
        int.from_bytes(d[end + 16 : end + 20], "little") for d, end in ((evil, evil_end), (honest, honest_end))
    )
    prefix = evil[: evil.index(b"PK\x06\x06")]  # the evil entries and their directory, without its end records
    directory = bytearray(honest[honest_dir : honest.index(b"PK\x06\x06")])
    shift = evil_dir - honest_dir
    for entry in re.finditer(b"PK\x01\x02", directory):  # each local header's offset, as zipfile will shift it back
        offset = int.from_bytes(directory[entry.start() + 42 : entry.start() + 46], "little")
        directory[entry.start() + 42 : entry.start() + 46] = (offset + shift).to_bytes(4, "little")
    end = bytearray(honest[honest_end:])
    end[16:20] = evil_dir.to_bytes(4, "little")  # where torch looks: the evil directory
    return prefix + honest[:honest_dir] + bytes(directory) + bytes(end)


def test_an_archive_that_two_zip_readers_read_differently_is_refused(good: dict, tmp_path: Path) -> None:
    path = tmp_path / "two.ckpt"
    path.write_bytes(_two_directories(good))
    with pytest.raises(UserError, match="zip readers resolve differently") as refused:
        checkpoints.read(path)
    assert "\n" not in str(refused.value)


def test_bytes_before_an_archive_are_refused(good: dict, tmp_path: Path) -> None:
    path = tmp_path / "prefixed.ckpt"
    path.write_bytes(b"#" * 100 + _bytes(good))
    with pytest.raises(UserError, match="bytes before, between or across its entries"):
        checkpoints.read(path)


# ---- resuming: the training state is tried on this run's own objects, inside one guard ----


def _deep_list(depth: int) -> list:
    nested: list = []
    for _ in range(depth):
        nested = [nested]
    return nested


def _crafted_training_state(kind: str, checkpoint: dict) -> dict:
    """A copy of ``checkpoint`` whose optimizer or schedule state is crafted as ``kind`` says."""
    checkpoint = {**checkpoint, "optimizer_states": [dict(checkpoint["optimizer_states"][0])]}
    optimizer = checkpoint["optimizer_states"][0]
    optimizer["param_groups"] = [dict(group) for group in optimizer["param_groups"]]
    optimizer["state"] = {k: dict(v) for k, v in optimizer["state"].items()}
    group, first = optimizer["param_groups"][0], optimizer["state"][0]
    if kind == "permuted-ids":
        group["params"] = group["params"][::-1]
    elif kind == "scalar-exp_avg":
        first["exp_avg"] = torch.tensor(0.0)
    elif kind == "step-shaped-like-the-parameter":
        first["step"] = torch.zeros_like(first["exp_avg"])
    elif kind == "string-state":
        first["exp_avg"] = "abc"
    elif kind == "3000-deep-list":
        first["exp_avg"] = _deep_list(3000)
    elif kind == "negative-lr":
        group["lr"] = -0.01
    elif kind == "schedule-a-million-steps-on":
        checkpoint["lr_schedulers"] = [{**checkpoint["lr_schedulers"][0], "last_epoch": 10**6}]
    elif kind == "nan-exp_avg":  # each value of its kind, and one step makes every weight NaN
        first["exp_avg"] = torch.full_like(first["exp_avg"], math.nan)
    elif kind == "invalid-random-state":  # of the right shape and dtype, and no state torch's generator can be in
        checkpoint["torch_rng_state"] = torch.zeros_like(checkpoint["torch_rng_state"])
    return checkpoint


RESUME_KINDS = [
    "permuted-ids",
    "scalar-exp_avg",
    "step-shaped-like-the-parameter",
    "string-state",
    "3000-deep-list",
    "negative-lr",
    "schedule-a-million-steps-on",
    "nan-exp_avg",
    "invalid-random-state",
]


@pytest.fixture(scope="module")
def with_schedule(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-epoch fit of configs/cpu.yaml (AdamW and a one-cycle schedule): its first epoch's checkpoint."""
    extra = ["--config", str(CPU), "--trainer.max_epochs=2", "--checkpoint.save_top_k=-1"]
    run = once(tmp_path_factory, "with_schedule", lambda f: main_in(f, *fit_args(TINY, data_dir, *extra)))
    return next((run / "lightning_logs" / "version_0" / "checkpoints").glob("best-epoch=0-*.ckpt"))


@pytest.mark.parametrize("kind", RESUME_KINDS)
def test_resuming_from_crafted_training_state_is_one_line(
    kind: str, with_schedule: Path, data_dir: Path, in_tmp: Path, capsys
) -> None:
    crafted = _crafted_training_state(kind, torch.load(with_schedule, weights_only=True))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # pickle recurses into the deep list as it writes it
    try:
        path = _save(crafted, in_tmp / f"{kind}.ckpt")
    finally:
        sys.setrecursionlimit(limit)
    args = ["fit", "--config", str(TINY), "--config", str(CPU), "--trainer.max_epochs=2", "--ckpt_path", str(path)]
    err = fails([*args, f"--data.data_dir={data_dir}"], capsys, max_lines=1)
    assert "does not fit this run" in err and "it cannot resume this run" in err


def test_a_checkpoints_hyperparameters_never_swap_the_classes_of_a_resumed_fit(
    with_schedule: Path, data_dir: Path, in_tmp: Path
) -> None:
    checkpoint = torch.load(with_schedule, weights_only=True)
    base = {"class_path": "torch.optim.lr_scheduler.LRScheduler", "init_args": {}}  # on torch's list, abstract
    hparams = {**checkpoint["hyper_parameters"], "scheduler": base, "net": {"class_path": "trojan.AlwaysThree"}}
    path = _save({**checkpoint, "hyper_parameters": hparams}, in_tmp / "swapped.ckpt")
    sys.modules.pop("trojan", None)  # so that an import would show
    args = ["fit", "--config", str(TINY), "--config", str(CPU), "--trainer.max_epochs=2", "--ckpt_path", str(path)]
    main([*args, f"--data.data_dir={data_dir}"])
    assert "trojan" not in sys.modules
    resumed = torch.load(newest_run(in_tmp / "lightning_logs") / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["hyper_parameters"]["scheduler"]["class_path"] == "torch.optim.lr_scheduler.OneCycleLR"


def test_a_resumed_checkpoint_never_makes_fit_remove_a_file_it_did_not_write(
    with_schedule: Path, data_dir: Path, in_tmp: Path
) -> None:
    """Lightning removes the checkpoints a newer one replaces, by the paths in the resumed ModelCheckpoint's state,
    when its dirpath is this run's: a crafted one names the new run's folder and files outside it."""
    checkpoint = torch.load(with_schedule, weights_only=True)
    key = next(k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint"))
    here = "lightning_logs/version_0/checkpoints"  # the folder the resumed fit below claims
    (in_tmp / "victim_dir").mkdir()
    (in_tmp / "victim.txt").write_text("kept")
    outside = {"victim.txt": torch.tensor(-1.0)}
    state = {**checkpoint["callbacks"][key], "dirpath": here, "last_model_path": f"{here}/../../../victim_dir"}
    state |= {"best_k_models": {f"{here}/../../../{name}": score for name, score in outside.items()}}
    state |= {"kth_best_model_path": f"{here}/../../../victim.txt", "kth_value": torch.tensor(-1.0)}
    crafted = _save({**checkpoint, "callbacks": {**checkpoint["callbacks"], key: state}}, in_tmp / "crafted.ckpt")
    args = ["fit", "--config", str(TINY), "--config", str(CPU), "--trainer.max_epochs=2", "--ckpt_path", str(crafted)]
    main([*args, f"--data.data_dir={data_dir}"])
    assert (in_tmp / "victim.txt").read_text() == "kept" and (in_tmp / "victim_dir").is_dir()
    assert (in_tmp / here / "last.ckpt").is_file()


@pytest.mark.filterwarnings("ignore:Experiment logs directory", "ignore:Checkpoint directory")  # a folder reused
def test_a_run_resumed_into_its_own_folder_still_replaces_its_best_checkpoint(data_dir: Path, in_tmp: Path) -> None:
    """The removal above is kept to checkpoint files beside the ones this process writes, not switched off."""
    args = ["fit", "--config", str(TINY), "--trainer.logger.init_args.version=exp", f"--data.data_dir={data_dir}"]
    main(args)
    folder = in_tmp / "lightning_logs" / "exp" / "checkpoints"
    main(
        [*args, "--trainer.max_epochs=3", "--trainer.limit_train_batches=20", "--ckpt_path", str(folder / "last.ckpt")]
    )
    assert len(list(folder.glob("best-*.ckpt"))) == 1, sorted(p.name for p in folder.iterdir())
