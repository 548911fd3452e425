"""The code blocks of the README and the docs site, found by the name each one carries.

Every fenced block in ``README.md`` and ``docs/**/*.md`` is one of two kinds
(``tests/unit/test_docs_blocks.py`` checks it):

* **run by a test**: the last non-blank line before its fence is
  ``<!-- block: NAME -->`` (invisible once rendered), NAME unique across
  the pages, and a test under ``tests/`` takes it with
  ``docs_block("NAME")`` and runs it (a script, a gunicorn config, shell
  commands, an rsyslog or logrotate config) or compares it with what the
  command prints (an output block);
* **not run here**: the last non-blank line before its fence is a visible
  line ``*Not run by the tests: WHY.*`` (a systemd unit beyond
  ``systemd-analyze verify``, a container build, a real OpenTelemetry
  Collector, ``pip install`` from a public index).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^\s*<!-- block: (?P<name>[a-z0-9][a-z0-9-]*) -->\s*$")
NOT_RUN = re.compile(r"^\s*\*Not run by the tests: .+\.\*\s*$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Block:
    """One fenced block: its text (dedented), language, page and first line, and how it is marked."""

    page: Path
    line: int
    lang: str
    text: str
    name: Optional[str]
    not_run: bool


def pages() -> List[Path]:
    """The README and every page of the docs site."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(page: Path) -> List[Block]:
    """Every fenced block of ``page``, in order."""
    found: List[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    previous = ""  # the last non-blank line before the current one
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index]
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: List[str] = []
        index += 1
        while index < len(lines) and not re.match(rf"^{indent}{fence[0]}{{{len(fence)},}}\s*$", lines[index]):
            body.append(lines[index])
            index += 1
        named = NAME.match(previous)
        found.append(
            Block(
                page=page,
                line=index - len(body),
                lang=opening["lang"],
                text=textwrap.dedent("\n".join(body)) + "\n",
                name=named["name"] if named else None,
                not_run=NOT_RUN.match(previous) is not None,
            )
        )
        index += 1  # the closing fence
        previous = ""
    return found


def all_blocks() -> List[Block]:
    return [block for page in pages() for block in blocks(page)]


def docs_block(name: str) -> Block:
    """The one block named ``name`` on any page."""
    named = [block for block in all_blocks() if block.name == name]
    assert len(named) == 1, f"{len(named)} blocks are named {name!r} in the README and docs/"
    return named[0]
