"""Render benchmark results into the docs: a MkDocs hook (mkdocs.yml) that replaces each ``{{ results NAME }}`` on a
page with what ``python benchmarks/NAME.py ... --json benchmarks/results/NAME.json`` recorded: its tables as printed,
stamped with the date, commit, machine, versions and command. A missing file fails ``mkdocs build --strict``."""

import json
import re
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
PLACEHOLDER = re.compile(r"\{\{ results ([\w-]+) \}\}")


def render(name: str) -> str:
    """One recorded result as Markdown: the command and its stamp, then what it printed."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the benchmark with --json {path}")
    data = json.loads(path.read_text())
    machine = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items())
    stamp = (
        f"`{data['command']}`, {data['date']}, commit {data['commit']}, on {machine['cpu']} "
        f"({machine['cores']} cores, {machine['memory_gib']} GiB), Python {data['python']}, {versions}."
    )
    out = [f"*Measured with {stamp}*"]
    for line in (line for line in data["output"] if line.strip()):
        if not (line.startswith("|") and out[-1].startswith("|")):
            out.append("")  # a table's rows stay together; anything else is a paragraph of its own
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return PLACEHOLDER.sub(lambda m: render(m.group(1)), markdown)
