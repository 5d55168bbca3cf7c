"""Bad input, said in a line or two: ``UserError``, and the short form of jsonargparse's parse errors."""

import difflib
import inspect
import re
import sys
from typing import Any, NoReturn


class UserError(Exception):
    """Bad input from the user: a path, a file or a setting that must change, said in a line or two."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception's first non-empty line, cut to ``limit`` characters, or its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0][:limit] + "…" * (len(lines[0]) > limit)) if lines else type(error).__name__


def printable(name: object) -> str:
    """A name or path from data, its unprintable characters escaped: ``ESC[2J`` in it cannot clear the terminal."""
    text = str(name)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(message: str) -> NoReturn:
    """The error on stderr, exit 1; a path or value from data in it is shown escaped, line by line."""
    shown = "\n".join(map(printable, message.splitlines()))
    print(f"mnist-lite: error: {shown}", file=sys.stderr)
    sys.exit(1)


class ConciseErrors:
    """For a jsonargparse parser: a bad option or value is reported in two lines (the problem, then where the help
    is), not jsonargparse's full usage listing; options are never matched by prefix."""

    prog: str
    exit_on_error: bool
    subcommands: Any = None  # the one LightningCLI adds

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --trainer.max_epoch is a typo, not max_epochs
        super().__init__(*args, **kwargs)

    def add_subcommands(self, *args: Any, **kwargs: Any) -> Any:
        self.subcommands = super().add_subcommands(*args, **kwargs)  # type: ignore[misc]
        return self.subcommands

    def print_help(self, file: Any = None) -> None:
        """argparse's own drops a closed pipe's error: here it reaches cli.main, which ends such a command 141."""
        (file or sys.stdout).write(self.format_help())  # type: ignore[attr-defined]

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)  # type: ignore[misc]  # raises argparse.ArgumentError
        parser = getattr(ex, "subcommand_parser", None) or self
        if (subcommands := getattr(parser, "subcommands", None)) and len(subcommands.choices) == 1:
            parser = next(iter(subcommands.choices.values()))  # --print_config's errors come from the top parser
        prog = parser.prog.replace(" [options]", "")
        try:  # every key it takes, dotted (a Namespace's keys()), for "did you mean"
            options = list(parser.get_defaults().keys())  # type: ignore[union-attr]
        except Exception:  # a default that cannot be built: no suggestion, the message still stands
            options = []
        problem = printable(concise(message, options))  # a value given may hold escapes
        sys.stderr.write(f"{prog}: error: {problem}\nSee '{prog} --help' for the accepted options.\n")
        sys.exit(2)


# What jsonargparse reports as the class when a config gives init_args and no class_path.
UNCHOSEN = {"typing.Union", "torch.optim.Optimizer", "torch.optim.optimizer.Optimizer"}


def concise(message: str, options: list[str] | None = None) -> str:
    """jsonargparse's message in a line: the full key (its nested ``Parser key`` names), then the innermost complaint
    in the user's words: for a key that is not there, the nearest name (or the names) there are."""
    keys = re.findall(r'[Pp]arser key "([^"]+)"', message)
    classes = re.findall(r"class_path[ =]'([^']+)'", message)
    denied = re.search(r"Importing '([^']+)' is not allowed, denied by the '([^']+)' entry", message)
    unknown = re.search(
        r"Option '(\w+)' is not accepted|(?:Group '([\w.]+)' )?does not accept option '([\w.]+)'|"
        r"unrecognized arguments: (\S+)",
        message,
    )
    kinds = [a or b for a, b in re.findall(r"Expected a <class '(\w+)'>|Not of type (\w+)", message) if a != "NoneType"]
    literal = re.findall(r"invalid literal for \w+\(\) with base \d+: '(.*)'", message)
    given = re.findall(r"(?:Got|Given) value: (.*?)(?:\. Got value: .*)?$", message, re.M)
    values = literal or [v for v in given if not v.startswith(("NestedArg(", "Namespace(", "{"))]
    prefix = ".init_args.".join(keys)
    if unknown and classes:  # a class's parameter
        key, class_path = f"{prefix}.init_args.{unknown.group(1)}", classes[-1]
        if class_path in UNCHOSEN:  # init_args given, but no class chosen to take them
            return (
                f"{key} is given, but no class is chosen: name one with class_path, or put this config after one "
                "that does (as --config configs/cpu.yaml --config configs/gpu.yaml)."
            )
        return f"{key} is not a parameter of {class_path}; {_nearest(unknown.group(1), _parameters(class_path))}"
    if unknown and (word := unknown.group(4)) and not word.startswith("-"):  # a value without its option
        hint = f" Did you mean --config {word}?" if word.endswith((".yaml", ".yml")) else ""
        return f"unexpected {word!r}: each value follows its option (--KEY VALUE).{hint}"
    if unknown:
        key = ".".join(filter(None, unknown.group(2, 3))) or unknown.group(4).lstrip("-").split("=")[0]
        parent, _, name = key.rpartition(".")
        names = {o.rpartition(".")[2]: "" for o in options or () if o.rpartition(".")[0] == parent}
        # A key written outside its group (max_epochs, optimizer.lr): the key that holds it there.
        nested = [o[:i] + key for o in options or () if (i := f".{o}.".find(f".{parent or key}.")) > 0]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6) if not parent else []  # --ckpt, --cfg
        if close or (nested and not (parent and names)):
            return f"{key} is not an option; did you mean '{f'--{close[0]}' if close else nested[0]}'?"
        if not parent or not names:  # none to list (the top level's groups, trainer, model, ..., are not keys)
            return f"{key} is not an option."
        return f"{key} is not an option; {_nearest(name, names, f'{parent}.')}"
    if denied:
        where = f"{prefix}: " if keys else ""
        return f"{where}importing {denied[1]!r} is not allowed (the {denied[2]!r} entry of the import-path denylist)."
    choices = [c for group in re.findall(r"Expected a typing\.Literal\[(.*?)\]", message) for c in group.split(", ")]
    if (kinds or choices) and values and keys:  # every type and every choice, of each member of a Union
        expected = [f"{'an' if k[0] in 'aeiouAEIOU' else 'a'} {k}" for k in dict.fromkeys(kinds)]
        expected += [f"one of {', '.join(dict.fromkeys(choices))}"] if choices else []
        return f"{prefix}: {values[0]!r} is not {' or '.join(expected)}."
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    marks = re.findall(r"line (\d+), column (\d+)", message)  # where the YAML parser was, then what it found
    if message.startswith("Problems parsing config") and marks:
        said = [lines[0].removeprefix("Problems parsing config:").strip(), *lines[1:]]
        found = [line for line in said if line.startswith(("found", "expected", "did not find"))]
        cause = found[-1:] or [line for line in said if line and not line.startswith("in ")][-1:]
        tab = " (a tab? YAML indents with spaces)" if "cannot start any token" in cause[0] else ""
        return f"a config is not valid YAML: {cause[0]} at line {marks[-1][0]}, column {marks[-1][1]}{tab}."
    specific = [line for line in lines[1:] if re.search(r"not allowed|has no attribute|is not expected|subclass", line)]
    return " ".join(lines) if len(lines) <= 2 else f"{lines[0]} {specific[-1] if specific else lines[-1]}"


def _parameters(class_path: str) -> dict[str, str]:
    """A class's parameters and their types, as its signature says (the parser has imported the class already)."""
    module, _, name = class_path.rpartition(".")
    try:
        parameters = inspect.signature(getattr(sys.modules[module], name)).parameters.values()
    except (KeyError, AttributeError, TypeError, ValueError):
        return {}
    return {
        p.name: "" if p.annotation is p.empty else inspect.formatannotation(p.annotation)
        for p in parameters
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "params"  # an optimizer's are the model's
    }


def _nearest(name: str, names: dict[str, str], parent: str = "") -> str:
    """``did you mean 'channels' (list[int])?``, or the names there are."""
    if close := difflib.get_close_matches(name, names, n=1, cutoff=0.6):
        return f"did you mean '{parent}{close[0]}'{f' ({names[close[0]]})' if names[close[0]] else ''}?"
    if len(names) > 12:
        return f"none of its {len(names)} names is close (--help lists them)."
    return f"it takes {', '.join(names)}." if names else "it takes none."
