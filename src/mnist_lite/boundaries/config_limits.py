"""Bounds on what a YAML config may cost, in jsonargparse's one YAML loader: its text's size, and the values its aliases
expand to, measured with a memo before anyone copies it (a "billion laughs" loads by reference; copies would not)."""

from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

MAX_CONFIG_CHARS = 1_000_000  # about 50 times configs/cpu.yaml; larger is not a config someone wrote
MAX_CONFIG_NODES = 100_000  # values after expanding aliases; configs/cpu.yaml has about 60


class ConfigTooLarge(yaml.YAMLError):
    """Raised by the loader; a YAMLError, so jsonargparse reports it as a config that cannot be loaded."""


def expanded_size(value: Any, memo: dict[int, int] | None = None) -> int:
    """How many values ``value`` holds once every shared (aliased) part is counted each time it is used."""
    memo = {} if memo is None else memo
    if id(value) in memo:
        return memo[id(value)]
    size = 1
    if isinstance(value, dict):
        size += sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in value.items())
    elif isinstance(value, list | tuple):
        size += sum(expanded_size(v, memo) for v in value)
    memo[id(value)] = size
    return size


def install() -> None:
    """Wrap jsonargparse's YAML loader once per process."""
    load = get_loader("yaml")
    if getattr(load, "bounded", False):
        return

    def load_bounded(text: str) -> Any:
        if len(text) > MAX_CONFIG_CHARS:
            raise ConfigTooLarge(f"config is {len(text):,} characters, more than the {MAX_CONFIG_CHARS:,} allowed")
        value = load(text)
        if (size := expanded_size(value)) > MAX_CONFIG_NODES:
            too_many = f"{size:,} values through its aliases, more than the {MAX_CONFIG_NODES:,} allowed"
            raise ConfigTooLarge(f"config expands to {too_many}")
        return value

    load_bounded.bounded = True  # type: ignore[attr-defined]
    set_loader("yaml", load_bounded, exceptions=(yaml.YAMLError,))
