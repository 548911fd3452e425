"""Every example on every page runs as written (issue 23): each block is run by a test, or says it is not.

The convention is tests/docs_blocks.py's. ``make test`` also builds the
site with ``mkdocs build --strict`` (a broken link or a page outside the
navigation is an error).
"""

from __future__ import annotations

import re
from collections import Counter

from tests.docs_blocks import REPO, all_blocks, pages


def test_every_block_is_run_by_a_test_or_says_it_is_not() -> None:
    unmarked = [f"{b.page.relative_to(REPO)}:{b.line}" for b in all_blocks() if not b.name and not b.not_run]
    assert not unmarked, (
        "blocks neither named for a test nor marked *Not run by the tests: ...*: " + ", ".join(unmarked)
    )


def test_every_named_block_is_taken_by_a_test() -> None:
    names = Counter(b.name for b in all_blocks() if b.name)
    assert [name for name, count in names.items() if count > 1] == [], "a name given twice"
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for path in (REPO / "tests").rglob("*.py")
        if path.name not in ("docs_blocks.py", "test_docs_blocks.py")
    )
    # Taken by name: docs_block("NAME"), or a helper given "NAME" (run_block, command_of, a parametrize).
    taken = {name for name in names if re.search(rf"""["']{re.escape(str(name))}["']""", sources)}
    assert sorted(set(names) - taken) == [], "named blocks no test takes"
    asked = set(re.findall(r"""docs_block\(\s*["']([a-z0-9-]+)["']""", sources))
    assert sorted(asked - set(names)) == [], "tests take blocks no page has"


def test_the_readme_is_short_and_links_to_what_it_moved() -> None:
    """At most 160 lines; links to the docs, the CHANGELOG, ARCHITECTURE and the security page."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 160
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    assert [link for link in local if not (REPO / link).exists()] == [], "a link to nothing"
    for wanted in ("CHANGELOG.md", "ARCHITECTURE.md", "docs/security.md", "docs/index.md"):
        assert wanted in local, f"the README does not link {wanted}"


def test_the_pages_say_nothing_meant_for_us() -> None:
    """Issue 23, item 9: no design-note numbers (DESIGN H19: no such file ships) and no private modules."""
    for page in pages():
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\bDESIGN\b|\bH\d{1,2}\b", text), f"{page.name} names the design notes"
        assert not re.search(r"forklog\._\w+", text), f"{page.name} names a private module"
