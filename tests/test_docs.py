"""The docs tell the truth about the command: every `mnist-lite ...` in the README and the docs parses with the
parser of its subcommand, so renaming an option breaks this test, not a reader. And the README stays a landing
page: short, and free of words that date it."""

import contextlib
import io
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from mnist_lite import commands
from mnist_lite.cli import SUBCOMMANDS, TRAINER_SUBCOMMANDS, main

from helpers import ROOT

PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
INLINE = re.compile(r"`(mnist-lite [^`]+)`")
# Files the docs' commands name that a run writes first: parsed in their stead, a config of the same kind.
WRITTEN_BY_A_RUN = {
    "lightning_logs/version_0/config.yaml": "configs/cpu.yaml",
    "lightning_logs/sweeps/cpu/best.yaml": "configs/cpu.yaml",
}


def _commands(page: Path) -> list[str]:
    """The mnist-lite commands of a page: the lines of its code blocks (continued with a backslash) and its inline
    code, without their comments."""
    text = page.read_text()
    found, shell = [], None  # shell: inside a fenced block of shell commands, or of something else (YAML, output)
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("```"):
            shell = None if shell is not None else line[3:].strip() in ("bash", "sh", "console", "")
        elif shell and line.strip().removeprefix("$ ").startswith("mnist-lite "):
            found.append(line.strip().removeprefix("$ "))
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [span for span in INLINE.findall(outside) if "..." not in span and len(span.split()) > 2]
    return found


CASES = [(page, command) for page in PAGES for command in _commands(page)]


def test_the_docs_show_the_commands_people_run() -> None:
    shown = {shlex.split(command, comments=True)[1] for _, command in CASES}
    assert set(SUBCOMMANDS) <= shown | {"--help"}  # every subcommand appears somewhere


@pytest.mark.parametrize(("page", "command"), CASES, ids=[f"{p.relative_to(ROOT)}:{c[11:60]}" for p, c in CASES])
def test_every_command_in_the_docs_parses(page: Path, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the docs' paths are relative to the repository
    words = [WRITTEN_BY_A_RUN.get(w, w) for w in shlex.split(command, comments=True)[1:]]
    name, args = words[0], words[1:]
    if name in ("--help", "-h", "--version"):
        main(words)
    elif name in TRAINER_SUBCOMMANDS:
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as done:
            main([name, *args, *([] if "--help" in args or any(".help" in a for a in args) else ["--print_config"])])
        assert done.value.code == 0, command
    else:
        assert name in commands.NAMES, command
        if "--help" in args:
            return
        commands.parser(name, exit_on_error=False).parse_args(args)


def test_the_readme_is_a_landing_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "It re-implements *the assignment*: the fifth assignment of the ERA V3 course" in " ".join(readme.split())
    for page in PAGES:
        if "experiments" not in page.parts:  # the dated records of searches and CI times
            dated = r"\btoday\b|this session|previous session|\bcommit [0-9a-f]{7}|on this machine"
            assert not re.search(dated, page.read_text(), re.I), page
            # "seed" means a random seed only; the course project is "the assignment"
            assert not re.search(r"\bthe seed\b(?! of)|\bseed's (network|promise|pipeline)", page.read_text(), re.I), (
                page
            )


def test_dev_has_every_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev = next(d for d in extras["dev"] if d.startswith("mnist-lite["))
    assert set(dev.removeprefix("mnist-lite[").removesuffix("]").split(",")) == set(extras) - {"dev"}


def _blocks(page: Path) -> list[list[str]]:
    """The lines of each fenced block of a page that is neither shell nor YAML: the output a page shows."""
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", page.read_text(), flags=re.S | re.M)
    return [body.splitlines() for kind, body in blocks if kind in ("", "text")]


def _same_shape(shown: str, printed: str) -> bool:
    """A line the docs show against one a command printed: the same words, any numbers (a run's own values)."""
    parts = re.split(r"\d[\d,.]*\d|\d", shown)
    return re.fullmatch(r"[\d,.]+".join(re.escape(p) for p in parts), printed) is not None


def test_the_outputs_the_docs_show_are_what_the_commands_print(
    in_tmp: Path, data_dir: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """getting-started's fit and test lines from a short fit, and configuration's errors from its own commands."""
    quick = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
    main(["fit", "--config", str(ROOT / "configs" / "cpu.yaml"), f"--data.data_dir={data_dir}", *quick])
    main(["test", "--ckpt_path", "best", "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false"])
    printed = capsys.readouterr().out.splitlines()
    fit_lines, test_line = _blocks(ROOT / "docs" / "getting-started.md")[:2]
    assert [_same_shape(s, p) for s, p in zip(fit_lines, printed)] == [True] * 4
    assert any(_same_shape(test_line[0], p) for p in printed)

    monkeypatch.chdir(ROOT)  # the page's paths; each of its commands fails before it writes anything
    shown = "\n".join(_blocks(ROOT / "docs" / "configuration.md")[0])
    examples = re.findall(r"^\$ (mnist-lite .+)\n((?:(?!\$ ).*\n?)*)", shown, flags=re.M)
    assert len(examples) == 3  # a typo under init_args, a wrong type, a typo at the top
    for command, output in examples:
        with pytest.raises(SystemExit):
            main(shlex.split(command)[1:])
        assert capsys.readouterr().err.strip() == output.strip(), command
