"""A study's fingerprint: the merged base configs (their content, not their names), the seeds and the space. A
study takes no trial of others, whose value could not be ranked with its own."""

import hashlib
import json
import shlex
from typing import Any

import optuna
from optuna.distributions import distribution_to_json

from mnist_lite.boundaries.files import printable
from mnist_lite.commands.sweep import database
from mnist_lite.commands.sweep.objective import Settings
from mnist_lite.errors import UserError


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
