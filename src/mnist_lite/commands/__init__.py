"""Each tool beside LightningCLI's subcommands is a function in ``commands/<name>.py``: jsonargparse reads its
signature and docstring as its options and ``--help``. It builds no Trainer, and imports Lightning only if it must."""

import importlib
import inspect
import types
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

import docstring_parser
from jsonargparse import ActionYesNo, ArgumentParser

from mnist_lite.boundaries import config_limits
from mnist_lite.errors import ConciseErrors

NAMES = ("augment", "curves", "export", "runs", "serve", "sweep")


class ToolParser(ConciseErrors, ArgumentParser):
    """jsonargparse's parser with the short errors every mnist-lite command gives."""


def function(name: str) -> Callable[..., None]:
    return getattr(importlib.import_module(f"mnist_lite.commands.{name}"), name)


def summary(tool: Callable[..., None]) -> str:
    return (inspect.getdoc(tool) or "").split("\n")[0]


def parser(name: str, exit_on_error: bool = True) -> ArgumentParser:
    """``mnist-lite NAME``'s parser, built from the tool's signature. A list parameter takes its values as separate
    words and may be repeated (``--config a.yaml --config b.yaml``, ``--seeds 0 1 2``); a switch that is off by
    default is turned on by its name alone (``--overwrite``)."""
    tool = function(name)
    built = ToolParser(prog=f"mnist-lite {name}", description=summary(tool), exit_on_error=exit_on_error)
    parameters = inspect.signature(tool).parameters
    lists = {key: item for key, p in parameters.items() if (item := _list_item(p.annotation)) is not None}
    switches = {key for key, p in parameters.items() if p.annotation is bool and p.default is False}
    built.add_function_arguments(tool, as_group=False, skip=set(lists) | switches)  # the description once
    docs = {p.arg_name: p.description for p in docstring_parser.parse(inspect.getdoc(tool) or "").params}
    for key, item in lists.items():
        required = parameters[key].default is inspect.Parameter.empty
        help_text = f"{docs.get(key, '')} (one or more)"
        built.add_argument(f"--{key}", type=item, nargs="+", action="extend", required=required, help=help_text)
    for key in switches:
        built.add_argument(f"--{key}", action=ActionYesNo, default=False, help=docs.get(key, ""))
    return built


def run(name: str, args: list[str]) -> None:
    """``mnist-lite NAME ARGS``."""
    config_limits.install()
    options = parser(name).parse_args(args)
    tool = function(name)
    tool(**{key: options[key] for key in inspect.signature(tool).parameters})


def _list_item(annotation: Any) -> type | None:
    """``X`` for ``list[X]`` or ``list[X] | None``; None for anything else."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next((a for a in get_args(annotation) if a is not type(None)), None)
    return get_args(annotation)[0] if get_origin(annotation) is list else None
