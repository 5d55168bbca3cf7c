"""The command's shape: dispatch before anything is built, tools beside LightningCLI, short help, clear errors."""

import ast
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import ProgressBar

from mnist_lite import __version__, commands
from mnist_lite.cli import SUBCOMMANDS, TRAINER_SUBCOMMANDS, main
from mnist_lite.training.cli import PROGRESS_REFRESH_STEPS, build

from helpers import CPU, EXAMPLES, TINY, fails, fit_args, free_port, glued_lines, run_cli

SRC = Path(__file__).resolve().parents[1] / "src" / "mnist_lite"


def test_version(capsys) -> None:
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"mnist-lite {__version__}"


def test_help_lists_every_subcommand_with_its_whole_summary(capsys) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    for name, summary in SUBCOMMANDS.items():
        assert f"  {name}" in out and summary in out
        assert summary.endswith(".") and len(summary) <= 120
    assert set(SUBCOMMANDS) == {*TRAINER_SUBCOMMANDS, *commands.NAMES}


@pytest.mark.slow
def test_help_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys; from mnist_lite.cli import main; main(['--help']); "
        "print(sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


# Runs each tool in turn in one fresh process, and after each says which Lightning modules are loaded. Serve goes
# last: a thread waits for /health and sends the server SIGTERM, so the whole start and stop run.
TOOL_PROBE = """
import json, os, signal, sys, threading, time, urllib.request
from mnist_lite.cli import main

def stop_when_serving(port):
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)

for args in json.loads(sys.argv[1]):
    if args[0] == "serve":
        threading.Thread(target=stop_when_serving, args=(args[args.index("--port") + 1],), daemon=True).start()
    main(args)
    print(args[0], sorted(m for m in sys.modules if m.split(".")[0] == "lightning")[:3])
"""


@pytest.mark.slow
def test_the_tools_run_without_importing_lightning(
    tiny_run: Path, tiny_checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    run = tiny_run  # read, never written: curves writes into tmp_path
    port = free_port()
    tools = [
        ["augment", "--data_dir", str(data_dir), "--output", str(tmp_path / "augment.png")],
        ["curves", "--log_dir", str(run), "--output", str(tmp_path / "curves.png")],
        ["export", "--ckpt_path", str(tiny_checkpoint), "--format", "state_dict", "--output", str(tmp_path / "m.pt")],
        ["runs", "--log_dir", str(run.parent)],
        ["serve", "--ckpt_path", str(tiny_checkpoint), "--port", str(port)],
    ]
    result = subprocess.run(
        [sys.executable, "-c", TOOL_PROBE, json.dumps(tools)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = [line for line in result.stdout.splitlines() if line.split(" ", 1)[0] in {t[0] for t in tools}]
    assert loaded == [f"{tool[0]} []" for tool in tools], result.stdout[-1000:]
    assert all((tmp_path / name).is_file() for name in ("augment.png", "curves.png", "m.pt"))


@pytest.mark.parametrize(("typed", "nearest"), [("fitt", "fit"), ("tset", "test"), ("serv", "serve")])
def test_a_mistyped_subcommand_gets_the_list_and_the_nearest_name(typed: str, nearest: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([typed])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"unknown subcommand {typed!r}. Did you mean '{nearest}'?" in err
    assert all(name in err for name in SUBCOMMANDS)


def test_no_subcommand_names_them_all(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "choose a subcommand" in capsys.readouterr().err


@pytest.mark.parametrize("name", commands.NAMES)
def test_a_tools_summary_is_its_docstrings_first_line(name: str) -> None:
    assert SUBCOMMANDS[name] == commands.summary(commands.function(name))


def test_tool_help_comes_from_the_signature(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["curves", "--help"])
    out = capsys.readouterr().out
    assert "<log_dir>/learning_curves.png when not" in out and out.count("default:") == 1  # output's only


@pytest.mark.parametrize("name", commands.NAMES)
def test_a_tools_help_says_what_it_does_once(name: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
    assert out.count(SUBCOMMANDS[name].rstrip(".")) == 1


def test_a_tools_missing_option_points_at_the_tools_own_help(capsys) -> None:
    err = fails(["curves"], capsys)
    assert "mnist-lite curves: error: the following arguments are required: log_dir" in err
    assert "See 'mnist-lite curves --help'" in err


def test_a_switch_is_turned_on_by_its_name_alone() -> None:
    options = commands.parser("export").parse_args(["--ckpt_path", "x.ckpt", "--output", "m.onnx", "--overwrite"])
    assert options.overwrite is True


def test_fit_help_is_short_and_offers_only_the_projects_networks(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 250
    assert not re.search(r"torch\.nn\.\w|torchvision\.\w", out)  # no listing of every module and transform
    assert "--model.net " in out and "DigitNet" in out


@pytest.mark.parametrize("subcommand", TRAINER_SUBCOMMANDS)
def test_ckpt_path_help_is_the_projects_own(subcommand: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([subcommand, "--help"])
    out = capsys.readouterr().out
    help_text = out.split("--ckpt_path", 1)[1].split("\n  --", 1)[0]
    assert "'best' for the checkpoint with the highest val_acc in any run" in " ".join(help_text.split())
    assert "hpc" not in out and "registry" not in help_text and "--weights_only" not in out


# The private hooks the package may keep, at most two, each for a guarantee a test holds: {"module.Class._name": why}.
PRIVATE_HOOKS_ALLOWED: dict[str, str] = {}
# Every library class the package extends, and where its library documents it as extensible. Two are extended
# through what their library calls an implementation detail, each for a guarantee a test holds.
EXTENDED = {
    "jsonargparse._core.ArgumentParser": "jsonargparse: ArgumentParser, parser_mode and error_handler",
    "lightning.pytorch.cli.LightningArgumentParser": "LightningCLI(parser_class=...)",
    "lightning.pytorch.cli.LightningCLI": "LightningCLI's hooks (before_instantiate_classes, ...)",
    "lightning.pytorch.trainer.trainer.Trainer": "LightningCLI(trainer_class=...)",
    "lightning.pytorch.core.module.LightningModule": "LightningModule",
    "lightning.pytorch.core.datamodule.LightningDataModule": "LightningDataModule",
    "lightning.pytorch.callbacks.callback.Callback": "Callback",
    "lightning.pytorch.callbacks.prediction_writer.BasePredictionWriter": "BasePredictionWriter",
    "lightning.pytorch.loggers.csv_logs.CSVLogger": "CSVLogger (its version and root_dir properties)",
    "lightning.fabric.plugins.io.torch_io.TorchCheckpointIO": "CheckpointIO plugins",
    "torch.nn.modules.module.Module": "nn.Module",
    "torch.utils.data.dataset.Dataset": "Dataset (__getitems__ for batches)",
    "torch.utils.data.distributed.DistributedSampler": "DistributedSampler",
    "starlette.exceptions.HTTPException": "Starlette's exception handlers",
    "yaml.error.YAMLError": "PyYAML's errors",
    # argparse: "only the name of this class is considered a public API": fit --help in at most 250 lines
    # (test_fit_help_is_short_and_offers_only_the_projects_networks).
    "jsonargparse._formatters.DefaultHelpFormatter": "implementation detail: HelpFormatter.add_argument",
    # uvicorn times no request head that never ends (test_serve.py::
    # test_a_connection_that_sends_no_headers_is_closed_and_health_still_answers).
    "uvicorn.protocols.http.h11_impl.H11Protocol": "implementation detail: Config(http=...) takes a protocol class",
}
# Underscored names that their library documents as public.
DOCUMENTED_UNDERSCORED = {"_exit", "_asdict", "_replace", "_fields", "_getframe"}


def _package_modules() -> dict[str, Path]:
    return {
        ".".join(("mnist_lite", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in SRC.rglob("*.py")
    }


def test_the_cli_extends_lightning_only_where_lightning_documents_it() -> None:
    """Every library object the package touches, through its documented API: no ``x._name`` on anything but the
    package's own ``self``/``cls``; and no class of the package defines, or uses on ``self``, a private name that one
    of its library bases has (an override of a private method, or a write to a private attribute)."""
    found = set()
    for module, path in _package_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not re.fullmatch(r"_(?!_)\w*", node.attr):
                continue
            on_own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not on_own and node.attr not in DOCUMENTED_UNDERSCORED:
                found.add(f"{module}:{node.lineno} {ast.unparse(node)}")
        for name, cls in vars(importlib.import_module(module)).items() if not module.endswith("__main__") else ():
            if not isinstance(cls, type) or cls.__module__ != module:
                continue
            libraries = [base for base in cls.__mro__[1:] if not base.__module__.startswith(("mnist_lite", "builtins"))]
            source = "\n".join(_source(base) for base in libraries)
            ours = "\n".join(_source(c) for c in cls.__mro__ if c.__module__.startswith("mnist_lite"))
            used = set(re.findall(r"(?:def |self\.)(_\w+)", ours))
            for hook in (u for u in used if re.fullmatch(r"_(?!_)\w*", u)):
                if any(hasattr(base, hook) for base in libraries) or re.search(rf"self\.{hook}\b", source):
                    found.add(f"{module}.{name}.{hook}")
    assert sorted(found - set(PRIVATE_HOOKS_ALLOWED)) == []
    assert len(PRIVATE_HOOKS_ALLOWED) <= 2


def test_every_library_class_the_package_extends_is_listed_with_where_it_is_documented() -> None:
    extended = set()
    for module in _package_modules():
        for cls in vars(importlib.import_module(module)).values() if not module.endswith("__main__") else ():
            if isinstance(cls, type) and cls.__module__ == module:
                extended |= {
                    f"{base.__module__}.{base.__qualname__}"
                    for base in cls.__bases__
                    if not base.__module__.startswith(("mnist_lite", "builtins"))
                }
    assert extended == set(EXTENDED)
    assert sum(why.startswith("implementation detail") for why in EXTENDED.values()) + len(PRIVATE_HOOKS_ALLOWED) <= 2


def _source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # a class defined in C
        return ""


def test_the_default_thread_count_is_fixed_and_recorded(in_tmp: Path, data_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["threads"] == 1
    main(["fit", f"--data.data_dir={data_dir}", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"])
    saved = yaml.safe_load(Path("lightning_logs/version_0/config.yaml").read_text())
    assert saved["threads"] == 1


def test_limit_batches_keep_the_type_written(data_dir: Path) -> None:
    args = ["--config", str(TINY), f"--data.data_dir={data_dir}", "--trainer.logger=false"]
    one = build([*args, "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0.5"], run=False)
    assert one.trainer.limit_train_batches == 1 and isinstance(one.trainer.limit_train_batches, int)
    assert one.trainer.limit_val_batches == 0.5


def test_a_run_records_the_command_that_made_it(in_tmp: Path, data_dir: Path) -> None:
    main(fit_args(TINY, data_dir))
    first = Path("lightning_logs/version_0/config.yaml").read_text().splitlines()[0]
    assert first == f"# mnist-lite fit --config {TINY} --data.data_dir={data_dir}"


@pytest.mark.parametrize(
    ("args", "refresh_rate"),
    [
        ([], PROGRESS_REFRESH_STEPS),
        (["--trainer.callbacks=[{class_path: TQDMProgressBar, init_args: {refresh_rate: 3}}]"], 3),
        (["--trainer.enable_progress_bar=false"], None),
    ],
    ids=["default", "users-own-bar", "off"],
)
def test_the_progress_bar_redraws_every_few_steps_unless_configured(args, refresh_rate, data_dir: Path) -> None:
    built = build(["--config", str(CPU), f"--data.data_dir={data_dir}", "--trainer.logger=false", *args], run=False)
    bars = [c for c in built.trainer.callbacks if isinstance(c, ProgressBar)]
    assert [bar.refresh_rate for bar in bars] == ([refresh_rate] if refresh_rate else [])


def test_an_option_typo_is_not_taken_as_a_prefix(in_tmp: Path, capsys) -> None:
    err = fails(["fit", "--config", str(CPU), "--trainer.max_epoch=2"], capsys)
    assert "trainer.max_epoch" in err


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            ["--model.net.init_args.chanels=[8,16]"],
            "error: model.net.init_args.chanels is not a parameter of mnist_lite.network.CompactCNN; "
            "did you mean 'channels' (tuple[int, int])?",
        ),
        (
            "model:\n  net:\n    init_args:\n      hiden: 48\n",
            "error: model.net.init_args.hiden is not a parameter of mnist_lite.network.CompactCNN; "
            "did you mean 'hidden' (int)?",
        ),
        (["--model.net.init_args.hidden=abc"], "error: model.net.init_args.hidden: 'abc' is not an int."),
        (
            "model:\n  net:\n    init_args:\n      hidden: lots\n",
            "error: model.net.init_args.hidden: 'lots' is not an int.",
        ),
        (["--trainer.max_epoch=2"], "error: trainer.max_epoch is not an option; did you mean 'trainer.max_epochs'?"),
        ("trainer:\n  max_epoch: 2\n", "error: trainer.max_epoch is not an option; did you mean 'trainer.max_epochs'?"),
        (
            ["--model.optimizer.init_args.lrr=0.1"],
            "error: model.optimizer.init_args.lrr is not a parameter of torch.optim.AdamW; did you mean 'lr' (float",
        ),
        (["--data.batch_size=abc"], "error: data.batch_size: 'abc' is not a PositiveInt."),
        (["--trainer.precision=17"], "error: trainer.precision: '17' is not one of"),
        (
            ["--checkpoint.save_last=sometimes"],
            "error: checkpoint.save_last: 'sometimes' is not a bool or one of 'link'.",
        ),
    ],
    ids=[
        "cli-unknown",
        "yaml-unknown",
        "cli-type",
        "yaml-type",
        "cli-top",
        "yaml-top",
        "cli-optimizer",
        "cli-int",
        "cli-choice",
        "cli-bool-or-choice",
    ],
)
def test_a_bad_key_is_named_in_full_with_the_nearest_name_or_its_value_and_type(
    given: list[str] | str, expected: str, in_tmp: Path, capsys
) -> None:
    """What people edit most, under init_args or at the top, on the command line or in YAML: the full key, the
    nearest valid name (with its type) or the value as written and the type expected; never an internal repr."""
    args = given if isinstance(given, list) else ["--config", str(_write(in_tmp / "bad.yaml", given))]
    err = fails(["fit", "--config", str(CPU), *args], capsys)
    assert expected in err, err
    assert not re.search(r"NestedArg|Namespace\(|\{'init_args'|Parser key|class_path '", err), err


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (
            ["configs/cpu.yaml"],
            None,
            "unexpected 'configs/cpu.yaml': each value follows its option (--KEY VALUE). "
            "Did you mean --config configs/cpu.yaml?",
        ),
        (
            ["--config", "bad.yaml"],
            "model:\n\tlabel_smoothing: 0.1\n",
            "a config is not valid YAML: found character "
            "that cannot start any token at line 2, column 1 (a tab? YAML indents with spaces).",
        ),
        (
            ["--config", "bad.yaml"],
            "model:\n  a: 1\n b: 2\n",
            "not valid YAML: did not find expected key at line 3, column 2.",
        ),
        (["--config", "bad.yaml"], "a: *x\n", "a config is not valid YAML: found undefined alias at line 1, column 4."),
        (["--cfg", "configs/cpu.yaml"], None, "cfg is not an option; did you mean '--config'?"),
        (
            ["--config", "bad.yaml"],
            "max_epochs: 3\n",
            "max_epochs is not an option; did you mean 'trainer.max_epochs'?",
        ),
        (["--config", "bad.yaml"], "optimizer:\n  lr: 0.1\n", "did you mean 'model.optimizer.lr'?"),
    ],
    ids=[
        "config-without-its-option",
        "tab",
        "indentation",
        "undefined-alias",
        "short-option",
        "outside-its-group",
        "group-at-the-top",
    ],
)
def test_the_commonest_first_mistakes_say_what_to_type(args, config, expected, in_tmp: Path, capsys) -> None:
    if config is not None:
        _write(in_tmp / "bad.yaml", config)
    assert expected in fails(["fit", *args], capsys)


def test_print_config_names_a_bad_key_in_full_and_points_at_its_subcommands_help(in_tmp: Path, capsys) -> None:
    """--print_config's errors are raised by the top parser: still the full key, and fit's --help."""
    bad = _write(in_tmp / "bad.yaml", "model:\n  bogus: 1\n")
    err = fails(["fit", "--print_config", "--config", str(bad)], capsys)
    assert "mnist-lite fit: error: model.bogus is not an option; it takes net, " in err, err
    assert "See 'mnist-lite fit --help'" in err, err


def test_defaults_without_a_config_train_one_epoch(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    assert "  max_epochs: 1\n" in capsys.readouterr().out


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, "File does not exist"),
        ("model:\n  bogus: 1\n", "model.bogus is not an option; it takes net, "),
        ("data:\n  batch_size: abc\n", "data.batch_size: 'abc' is not a PositiveInt."),
        ("data:\n  batch_size: 0\n", "0 does not conform to restriction v>0"),
        ("data:\n  val_size: 60000\n", "val_size=60000 leaves no training images"),
        ("model:\n  optimizer:\n    class_path: builtins.print\n", "builtins.print is not an optimizer"),
        (
            "model:\n  scheduler:\n    class_path: torch.optim.AdamW\n",
            "Expected 'torch.optim.AdamW' to be a subclass of Union[LRScheduler, ReduceLROnPlateau]",
        ),
        (
            "model:\n  optimizer:\n    class_path: torch.optim.SGD\n    init_args: {lr: 0.1, betas: [0.9, 0.99]}\n",
            "model.optimizer.init_args.betas is not a parameter of torch.optim.SGD; it takes lr, momentum, ",
        ),
    ],
    ids=[
        "missing-config",
        "unknown-key",
        "wrong-type",
        "zero-batch-size",
        "val-size-too-big",
        "not-an-optimizer",
        "not-a-schedule",
        "init-args-of-another-class",
    ],
)
def test_bad_config_is_one_clear_error(config, expected, in_tmp: Path, data_dir: Path, capsys) -> None:
    path = in_tmp / "missing.yaml" if config is None else _write(in_tmp / "bad.yaml", config)
    err = fails(["fit", "--config", str(path), f"--data.data_dir={data_dir}"], capsys)
    assert expected in err
    assert not (in_tmp / "lightning_logs").exists()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--model.optimizer.init_args.lr=fast", "model.optimizer.init_args.lr: 'fast' is not a float."),
        ("--trainer.max_epochs=abc", "trainer.max_epochs: 'abc' is not an int."),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(option, expected, in_tmp: Path, capsys) -> None:
    err = fails(["fit", "--config", str(CPU), option], capsys)
    assert expected in err and "NestedArg" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--trainer.max_epochs=-3"], "`max_epochs` must be a non-negative integer or -1"),
        (["--config", str(CPU.parent / "gpu.yaml")], "no usable GPU"),
        (["--config", str(CPU.parent / "logger" / "tensorboard.yaml")], "Install it: pip install -e '.[tensorboard]'."),
    ],
    ids=["negative-epochs", "gpu-without-gpu", "tensorboard-without-the-extra"],
)
def test_trainer_settings_that_cannot_work_here(
    args, expected, data_dir: Path, in_tmp: Path, capsys, monkeypatch
) -> None:
    import torch

    if "GPU" in expected and torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so configs/gpu.yaml works")
    if "tensorboard" in expected:  # dev installs it: the logger is made to see an install without it
        from lightning.fabric.loggers import tensorboard as fabric_tb
        from lightning.pytorch.loggers import tensorboard as pytorch_tb
        from lightning_utilities.core.imports import RequirementCache

        missing = RequirementCache("tensorboard>=999")
        monkeypatch.setattr(fabric_tb, "_TENSORBOARD_AVAILABLE", missing)
        monkeypatch.setattr(fabric_tb, "_TENSORBOARDX_AVAILABLE", RequirementCache("tensorboardX>=999"))
        monkeypatch.setattr(pytorch_tb, "_TENSORBOARD_AVAILABLE", missing)
    err = fails(["fit", "--config", str(CPU), *args, f"--data.data_dir={data_dir}"], capsys)
    assert expected in err


SHIPPED = sorted(p for p in CPU.parent.rglob("*.yaml") if p.parent.name != "sweep")


@pytest.mark.parametrize("config", SHIPPED, ids=[str(p.relative_to(CPU.parent)) for p in SHIPPED])
def test_every_shipped_config_parses_on_top_of_cpu_yaml(config: Path) -> None:
    """Parsed by fit's own parser, as the README combines them (nothing built: gpu configs parse on any machine)."""
    base = build(["--config", str(CPU)], run=False, exit_on_error=False)
    parsed = base.parser.parse_args(["--config", str(CPU), "--config", str(config)])
    assert parsed.trainer.max_epochs >= 1


def test_every_subcommand_function_is_documented() -> None:
    for name in commands.NAMES:
        tool = commands.function(name)
        documented = {line.split(":")[0].strip() for line in (inspect.getdoc(tool) or "").splitlines()}
        assert set(inspect.signature(tool).parameters) <= documented, name


@pytest.mark.slow
def test_a_newcomers_commands_print_nothing_but_their_own_lines(data_dir: Path, tmp_path: Path) -> None:
    """The README's first commands as people run them (progress bar on): stderr stays empty, and no line of ours
    is glued to the end of the progress bar's. Where Debian's slurm-client is installed (CI installs it), Lightning's
    hint to use srun is among what must not show. A DDP fit's and a sweep's are tests/test_ddp.py's and
    tests/test_sweep.py's, which run them anyway."""
    quick = ["--trainer.limit_train_batches=10", "--trainer.limit_val_batches=2"]
    commands = [
        ["fit", "--config", str(CPU), f"--data.data_dir={data_dir}", *quick],
        ["test", "--ckpt_path", "best", f"--data.data_dir={data_dir}"],
        ["predict", "--ckpt_path", "last", "--data.predict_path", str(EXAMPLES)],
        ["runs"],
    ]
    for command in commands:
        result = run_cli(tmp_path, *command)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", (command[0], result.stderr[-3000:])
        assert not glued_lines(result.stdout), (command[0], glued_lines(result.stdout))
