"""Before any trial: each key at each bound and choice, parsed and built by fit's own code, so that a bad key or value
is one line and every value a trial draws parses; and the study's fingerprint (the merged configs' content, the seeds
and the space), so that a study takes no trial whose value could not be ranked with its own."""

import hashlib
import json
import shlex
from argparse import ArgumentError
from typing import Any

import optuna
from optuna.distributions import distribution_to_json

from mnist_lite.boundaries.files import printable
from mnist_lite.commands.sweep import database
from mnist_lite.commands.sweep.objective import Settings, quiet
from mnist_lite.errors import UserError, concise
from mnist_lite.training import cli as training_cli

SET_BY_THE_SWEEP = {"seed_everything": "--seeds", "trainer.logger": "the sweep (its trials log into --output)"}


def base(settings: Settings) -> Any:
    """fit's CLI for the base configs with what every trial adds, unrun; first, the keys only the sweep sets."""
    for d in settings.space:
        if setter := SET_BY_THE_SWEEP.get("trainer.logger" if d.key.startswith("trainer.logger.") else d.key):
            raise UserError(f"--space: {d.key} is set by {setter}; leave it out of the space.")
    try:
        with quiet():
            return training_cli.build(settings.trial_args(), run=False, exit_on_error=False)
    except ArgumentError as e:
        raise UserError(f"--config: {concise(str(e))}") from None


def check_rounds(settings: Settings) -> None:
    """One build per round, each key at its next candidate: what a trial builds, with the classes' own checks."""
    candidates = {d.key: d.candidates() for d in settings.space}
    for i in range(max(map(len, candidates.values()))):
        chosen = {key: values[i % len(values)] for key, values in candidates.items()}
        try:
            with quiet():
                training_cli.build(settings.trial_args(chosen), run=False, exit_on_error=False)
        except ArgumentError as e:  # jsonargparse's message names the key and the value
            raise UserError(f"--space: {concise(str(e))}") from None
        except UserError as e:
            raise UserError(f"--space: a trial of {chosen} would fail: {e}") from None


def claim(study: optuna.Study, base: Any, settings: Settings) -> None:
    """Mark a new study with the fingerprint, or refuse to add trials of other settings to an existing one."""
    config = base.parser.dump(base.parser.parse_args(settings.args()), skip_none=False)
    space = json.dumps([[d.key, distribution_to_json(d.distribution)] for d in settings.space])
    digest = hashlib.sha256("\n".join([config, json.dumps(settings.seeds), space]).encode()).hexdigest()[:16]
    named = f"study {study.study_name!r} in {database.shown(settings.storage)}"
    found = database.read(settings, lambda: study.user_attrs).get("fingerprint")
    seeds = found.get("seeds") if isinstance(found, dict) else None
    texts = isinstance(found, dict) and all(isinstance(found.get(k), str) for k in ("digest", "made_with"))
    if found is None and study.trials:
        raise UserError(f"{named} was not made by mnist-lite sweep: name another with --study.")
    if found is None:
        made_with = shlex.join([*settings.args(), "--seeds", *map(str, settings.seeds)])
        study.set_user_attr("fingerprint", {"digest": digest, "made_with": made_with, "seeds": settings.seeds})
    elif not (texts and isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)):
        raise UserError(f"{named} has a fingerprint no mnist-lite sweep wrote: name another with --study.")
    elif found["digest"] != digest:
        raise UserError(
            f"{named} was made with {printable(found['made_with'])} and its space as it was then; these configs, "
            "seeds or space differ. Start a new study with --study NAME, or go back to those."
        )
