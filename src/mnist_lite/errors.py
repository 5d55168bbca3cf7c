"""Bad input, said in a line or two: ``UserError``, and the short form of jsonargparse's parse errors."""

import re
import sys
from typing import IO, Any, NoReturn


class UserError(Exception):
    """Bad input from the user: a path, a file or a setting that must change, said in a line or two."""


def fail(message: str, prog: str = "mnist-lite") -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(1)


class ConciseErrors:
    """For a jsonargparse parser: a bad option or value is reported in two lines (the problem, then where the help
    is), not jsonargparse's full usage listing; options are never matched by prefix."""

    prog: str
    exit_on_error: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --trainer.max_epoch is a typo, not max_epochs
        super().__init__(*args, **kwargs)

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        """argparse drops an OSError here: ``mnist-lite fit --help | head -2`` would end 0, and every other command
        ends 141 on a closed pipe (cli.main)."""
        if message:
            (file or sys.stderr).write(message)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)  # type: ignore[misc]  # raises argparse.ArgumentError
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {concise(message)}\nSee '{prog} --help' for the accepted options.\n")
        sys.exit(2)


# What jsonargparse reports as the class when a config gives init_args and no class_path.
UNCHOSEN = {"typing.Union", "torch.optim.Optimizer", "torch.optim.optimizer.Optimizer"}


def concise(message: str) -> str:
    """jsonargparse explains a value that fits no type of a union by listing every type's complaint, in its own
    notation; the line that says what is wrong, in the user's words, is the one to show."""
    keys = re.findall(r'[Pp]arser key "([^"]+)"', message)
    key = ".init_args.".join(keys)  # a class's own option is nested: model.optimizer, then lr
    prefix = f"{key}: " if key else ""
    denied = re.search(r"Importing '([^']+)' is not allowed, denied by the '([^']+)' entry", message)
    if denied:
        path, entry = denied.groups()
        return f"{prefix}importing {path!r} is not allowed (the {entry!r} entry of the import-path denylist)."
    types = [t for t in re.findall(r"Expected a <class '(\w+)'>", message) if t != "NoneType"]
    given = re.search(r"Given value: (.*?)(?:\. Got value:|\n|$)", message)
    if types and given and (len(keys) > 1 or "expects a function" not in message):
        kinds = " or ".join(f"{'an' if t[0] in 'aeiou' else 'a'} {t}" for t in dict.fromkeys(types))
        return f"{prefix}{given.group(1)!r} is not {kinds}."
    problem = re.search(
        r"expects a function or a callable class: (.+?)\.*\s*Got value: .*?class_path='([^']+)'", message
    )
    if problem:
        reason, class_path = problem.groups()
        option = re.fullmatch(r"Option '(\w+)' is not accepted", reason)
        if option and class_path in UNCHOSEN:  # init_args given, but no class chosen to take them
            return (
                f"{prefix}{option.group(1)!r} is given, but no class is chosen: name one with class_path, or put this "
                "config after one that does (as --config configs/cpu.yaml --config configs/gpu.yaml)."
            )
        if option:
            return f"{prefix}{option.group(1)!r} is not a parameter of {class_path}; init_args take its parameters."
        return f"{prefix}{reason}."
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    specific = [
        line
        for line in lines
        if "does not accept" in line
        or "is not expected" in line
        or "Problem with given class_path" in line
        or "not allowed" in line
        or "has no attribute" in line
    ]
    return f"{lines[0]} {specific[-1] if specific else lines[-1]}"
