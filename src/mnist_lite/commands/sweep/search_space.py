"""``--space``: a YAML file mapping dotted config keys to Optuna's distributions, which check their own bounds.
Choices may be any YAML value: lists and mappings are stored as JSON text. docs/sweeps.md shows each form."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from jsonargparse import get_loader
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mnist_lite.boundaries import config_limits, files
from mnist_lite.errors import UserError, first_line

MAX_SPACE_BYTES = 100_000  # a space someone wrote is a few hundred bytes


@dataclass(frozen=True)
class Dimension:
    key: str  # a dotted config key, as on the command line: model.scheduler.init_args.max_lr
    name: str  # its shortest unambiguous ending, Optuna's name for it (max_lr): what the plots show
    distribution: Any  # Optuna's
    encoded: bool = False  # whether the choices are JSON text

    def suggest(self, trial: optuna.Trial) -> Any:
        """The trial's value for this key, drawn by Optuna, as the config takes it."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return self.value(trial.suggest_categorical(self.name, d.choices))
        suggest = trial.suggest_int if isinstance(d, IntDistribution) else trial.suggest_float
        return suggest(self.name, d.low, d.high, step=d.step, log=d.log)

    def candidates(self) -> list[Any]:
        """The values to check against the config before anything runs: the bounds, or every choice."""
        d = self.distribution
        return [self.value(c) for c in d.choices] if isinstance(d, CategoricalDistribution) else [d.low, d.high]

    def value(self, stored: Any) -> Any:
        """A value this key draws, as the config takes it (Optuna checks it as it makes a trial); ValueError for
        any other, such as one read from a storage that others write."""
        optuna.trial.create_trial(params={self.name: stored}, distributions={self.name: self.distribution}, value=0)
        drawn = self.distribution.to_external_repr(self.distribution.to_internal_repr(stored))
        return json.loads(drawn) if self.encoded else drawn


def load(path: str | Path) -> list[Dimension]:
    """Read and check a space file; every problem is one line naming the file and the key."""
    path = Path(path)
    config_limits.install()  # a space is read as configs are: bounded, and 1e-4 is a number (not YAML 1.1's text)
    try:
        raw = get_loader("yaml")(files.read_bytes(path, MAX_SPACE_BYTES).decode(errors="replace"))
    except OSError as e:
        raise UserError(f"--space {path}: {e.strerror or e}.") from None
    except ValueError as e:  # over the size limit
        raise UserError(f"--space {e}.") from None
    except yaml.YAMLError as e:
        raise UserError(f"--space {path} is not valid YAML: {first_line(e)}") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(
            f"--space {path} must map config keys to distributions, e.g. data.batch_size: {{choices: [32, 64]}}."
        )
    keys = [str(key) for key in raw]
    return [_dimension(path, key, _short_name(key, keys), spec) for key, spec in zip(keys, raw.values())]


def _short_name(key: str, keys: list[str]) -> str:
    parts = key.split(".")
    endings = (".".join(parts[-n:]) for n in range(1, len(parts)))
    return next((e for e in endings if sum(k == e or k.endswith("." + e) for k in keys) == 1), key)


def _dimension(path: Path, key: str, name: str, spec: Any) -> Dimension:
    """Optuna checks the bounds and the keys it takes as it makes the distribution; we check the rest."""
    try:
        if not isinstance(spec, dict):
            raise ValueError(f"{spec!r} is not a distribution: give {{low: .., high: ..}} or {{choices: [..]}}.")
        if "choices" in spec:
            if not isinstance(choices := spec["choices"], list):
                raise ValueError("choices must be a list.")
            encoded = not all(c is None or isinstance(c, bool | int | float | str) for c in choices)
            spec = {**spec, "choices": [json.dumps(c) for c in choices] if encoded else choices}
            return Dimension(key, name, CategoricalDistribution(**spec), encoded)
        numbers = [spec[k] for k in ("low", "high", "step") if spec.get(k) is not None]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise ValueError("low, high and step must be finite numbers.")
        if not isinstance(spec.get("log", False), bool):
            raise ValueError(f"log must be true or false, not {spec['log']!r}.")
        kind = IntDistribution if all(isinstance(v, int) for v in numbers) else FloatDistribution
        return Dimension(key, name, kind(**spec))
    except (ValueError, TypeError) as e:
        raise UserError(f"--space {path}: {key}: {first_line(e)}") from None
