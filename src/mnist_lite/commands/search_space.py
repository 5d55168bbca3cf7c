"""The search space of ``mnist-lite sweep``: a YAML file mapping dotted config keys to distributions.

    model.scheduler.init_args.max_lr: {low: 0.005, high: 0.05, log: true}   # a float, log-uniform
    trainer.accumulate_grad_batches: {low: 1, high: 4}                       # an int (both bounds ints)
    model.label_smoothing: {low: 0.0, high: 0.15, step: 0.05}                # a float on a grid
    data.batch_size: {choices: [32, 64, 128]}                                # one of these values

Choices may be any YAML value. Optuna stores numbers, text, booleans and null as they are, and lists (AdamW's
betas) and mappings as JSON text.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_lite.boundaries import files
from mnist_lite.errors import UserError

RANGE_KEYS, CHOICE_KEYS = {"low", "high", "log", "step"}, {"choices"}
MAX_SPACE_BYTES = 100_000  # a space someone wrote is a few hundred bytes


@dataclass(frozen=True)
class Dimension:
    key: str  # a dotted config key, as on the command line: model.scheduler.init_args.max_lr
    name: str  # its shortest unambiguous ending, Optuna's name for it (max_lr): what the plots show
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()  # as Optuna stores them: plain values, or JSON text when one is a list or mapping
    encoded: bool = False  # whether the choices are JSON text

    def suggest(self, trial: Any) -> Any:
        """The trial's value for this key, drawn through Optuna's ``trial.suggest_*``."""
        if self.choices:
            return self.value(trial.suggest_categorical(self.name, self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def candidates(self) -> list[Any]:
        """The values to check against the config before anything runs: the bounds, or every choice."""
        return [self.value(c) for c in self.choices] if self.choices else [self.low, self.high]

    def value(self, stored: Any) -> Any:
        """A value as Optuna stored it, as the config takes it."""
        return json.loads(stored) if self.encoded else stored

    def distribution(self) -> Any:
        """The Optuna distribution ``suggest`` draws from."""
        from optuna import distributions  # only the sweep needs Optuna

        if self.choices:
            return distributions.CategoricalDistribution(self.choices)
        if isinstance(self.low, int) and isinstance(self.high, int):
            return distributions.IntDistribution(self.low, self.high, log=self.log, step=int(self.step or 1))
        return distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]

    def holds(self, stored: Any) -> bool:
        """Whether a value read from a study's storage is one ``suggest`` can draw: a choice, of its type too, or a
        number within the bounds (a whole one for an int key), on the step's grid."""
        if self.choices:
            return any(type(stored) is type(c) and stored == c for c in self.choices)
        low, high = self.low, self.high
        if isinstance(stored, bool) or not isinstance(stored, int | float) or low is None or high is None:
            return False
        if not low <= stored <= high:  # NaN is never within
            return False
        if isinstance(low, int) and isinstance(high, int):
            return isinstance(stored, int) and (stored - low) % int(self.step or 1) == 0
        return self.step is None or abs((stored - low) / self.step - round((stored - low) / self.step)) < 1e-8


def load(path: str | Path) -> list[Dimension]:
    """Read and check a space file; every problem is one line naming the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(files.read_bytes(path, MAX_SPACE_BYTES))
    except OSError as e:
        raise UserError(f"--space {path}: {e.strerror or e}.") from None
    except ValueError as e:  # over the size limit
        raise UserError(f"--space {e}.") from None
    except yaml.YAMLError as e:
        raise UserError(f"--space {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(
            f"--space {path} must map config keys to distributions, e.g. model.label_smoothing: {{low: 0, high: 0.1}}."
        )
    keys = [str(key) for key in raw]
    return [_dimension(path, key, _short_name(key, keys), spec) for key, spec in zip(keys, raw.values())]


def _short_name(key: str, keys: list[str]) -> str:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        name = ".".join(parts[-n:])
        if sum(k == name or k.endswith("." + name) for k in keys) == 1:
            return name
    return key


def _dimension(path: Path, key: str, name: str, spec: Any) -> Dimension:
    def bad(why: str) -> UserError:
        return UserError(f"--space {path}: {key}: {why}")

    if not isinstance(spec, dict):
        raise bad(f"{spec!r} is not a distribution: give {{low: .., high: ..}} or {{choices: [..]}}.")
    keys = set(spec)
    if keys & CHOICE_KEYS:
        if keys - CHOICE_KEYS:
            raise bad(f"choices cannot be combined with {', '.join(sorted(keys - CHOICE_KEYS))}.")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise bad("choices must be a non-empty list.")
        encoded = tuple(json.dumps(c) for c in choices)
        if len(set(encoded)) != len(encoded):
            raise bad("choices has duplicates.")
        if all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            return Dimension(key, name, choices=tuple(choices))
        return Dimension(key, name, choices=encoded, encoded=True)
    unknown = keys - RANGE_KEYS
    if unknown or not {"low", "high"} <= keys:
        raise bad(f"expected low and high (and optionally log, step) or choices; got {', '.join(sorted(keys))}.")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise bad("low, high and step must be finite numbers.")
    if not isinstance(log, bool):
        raise bad(f"log must be true or false, not {log!r}.")
    if not low < high:
        raise bad(f"low ({low}) must be below high ({high}).")
    if log and low <= 0:
        raise bad(f"a log scale needs low > 0 (got {low}).")
    if step is not None and (step <= 0 or log):
        raise bad("step must be positive, and cannot be combined with log.")
    return Dimension(key, name, low=low, high=high, log=log, step=step)
