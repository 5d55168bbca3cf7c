"""The tools beside Lightning's trainer subcommands. Each is a function; its signature and docstring are its
options and its ``--help``, read by jsonargparse, so types, defaults and help live in one place."""

import importlib
import inspect
import types
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

import docstring_parser
from jsonargparse import ArgumentParser

# Each is the function of the same name in mnist_lite.commands.<name>, imported only when its command runs (or for
# mnist-lite --help), so that fit's start-up pays for none of them.
TOOLS = ("augment", "export", "curves", "serve", "sweep")


def tool(name: str) -> Callable[..., None]:
    return getattr(importlib.import_module(f"mnist_lite.commands.{name}"), name)


def add_arguments(parser: ArgumentParser, tool: Callable[..., None]) -> None:
    """The tool's options from its signature. A list parameter takes its values as separate words and may be
    repeated (``--config a.yaml --config b.yaml``, ``--seeds 0 1 2``), where jsonargparse would want ``[a, b]``."""
    parameters = inspect.signature(tool).parameters
    lists = {name: item for name, p in parameters.items() if (item := _list_item(p.annotation)) is not None}
    parser.add_function_arguments(tool, skip=set(lists))
    docs = {p.arg_name: p.description for p in docstring_parser.parse(inspect.getdoc(tool) or "").params}
    for name, item in lists.items():
        required = parameters[name].default is inspect.Parameter.empty
        help_text = f"{docs.get(name, '')} (one or more)"
        parser.add_argument(f"--{name}", type=item, nargs="+", action="extend", required=required, help=help_text)


def _list_item(annotation: Any) -> type | None:
    """``X`` for ``list[X]`` or ``list[X] | None``; None for anything else."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next((a for a in get_args(annotation) if a is not type(None)), None)
    return get_args(annotation)[0] if get_origin(annotation) is list else None
