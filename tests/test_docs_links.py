"""Every link between the README, the docs and the benchmark results leads somewhere: a moved
section or a renamed page fails here, not in a reader's browser."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#+ (.*)$", re.MULTILINE)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/RESULTS.md"]


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(page: Path) -> set[str]:
    return {anchor(h) for h in HEADING.findall(page.read_text(encoding="utf-8"))}


def broken(page: Path) -> list[str]:
    """The relative links of `page` whose file or heading does not exist."""
    found = []
    for link in LINK.findall(page.read_text(encoding="utf-8")):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, part = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            found.append(f"{link}: no such file")
        elif part and target.suffix == ".md" and part not in headings(target):
            found.append(f"{link}: no such heading")
    return found


def test_every_link_leads_somewhere() -> None:
    assert len(PAGES) > 10
    problems = {page.name: broken(page) for page in PAGES}
    assert not {name: p for name, p in problems.items() if p}


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Two words\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#two-words) [web](https://x.org) [f](c.md) [h](a.md#three)\n")
    assert broken(page) == ["c.md: no such file", "a.md#three: no such heading"]
