"""Before a study's first trial: each key at each bound and choice, parsed and built by fit's own code, so that a
bad key or value is one line and every value a trial draws parses."""

from argparse import ArgumentError
from typing import Any

from mnist_lite.commands.sweep import capture
from mnist_lite.commands.sweep.objective import Settings
from mnist_lite.errors import UserError, concise
from mnist_lite.training import cli as training_cli

SET_BY_THE_SWEEP = {"seed_everything": "--seeds", "trainer.logger": "the sweep (its trials log into --output)"}


def base(settings: Settings) -> Any:
    """fit's CLI for the base configs with what every trial adds, unrun; first, the keys only the sweep sets."""
    for d in settings.space:
        if setter := SET_BY_THE_SWEEP.get("trainer.logger" if d.key.startswith("trainer.logger.") else d.key):
            raise UserError(f"--space: {d.key} is set by {setter}; leave it out of the space.")
    training_cli.check_config_files(settings.args())
    try:
        with capture.quiet():
            return training_cli.build(settings.trial_args(), run=False, exit_on_error=False)
    except ArgumentError as e:
        raise UserError(f"--config: {concise(str(e))}") from None


def check_rounds(settings: Settings) -> None:
    """One build per round, each key at its next candidate: what a trial builds, with the classes' own checks."""
    candidates = {d.key: d.candidates() for d in settings.space}
    for i in range(max(map(len, candidates.values()))):
        chosen = {key: values[i % len(values)] for key, values in candidates.items()}
        try:
            with capture.quiet():
                training_cli.build(settings.trial_args(chosen), run=False, exit_on_error=False)
        except ArgumentError as e:  # jsonargparse's message names the key and the value
            raise UserError(f"--space: {concise(str(e))}") from None
        except UserError as e:
            raise UserError(f"--space: a trial of {chosen} would fail: {e}") from None
