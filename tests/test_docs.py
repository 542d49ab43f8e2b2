"""README and docs/ (issue 21): the two commands stay at the top, the README stays short, and every
relative link between the markdown pages (file and #section) resolves."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped (not - or _), spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def test_readme_opens_with_the_two_commands_and_stays_short() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("```sh")
    block = lines[start + 1 : lines.index("```", start + 1)]
    assert start < 5
    assert {"make demo", "make test"} <= {" ".join(line.split()[:2]) for line in block}
    assert len(lines) < 200
    assert "docs/benchmarks.md" in "\n".join(lines)


def test_every_relative_link_resolves() -> None:
    bad = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
                bad.append(f"{page.name}: {target} (no such section)")
    assert not bad, bad
