"""The README and docs/ link to files and headings that exist: a template is read through its links."""

from __future__ import annotations

import json
import re

from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def test_every_local_link_reaches_its_file_and_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_stays_a_few_screens_with_the_package_tree_near_the_top():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert any(line.startswith("catdog_lightning/") for line in lines[:80])


def test_your_classes_md_quotes_the_stored_clothing_table_as_it_is():
    """docs/your-classes.md shows the table scripts/your_classes.py stored (RESULTS.md renders it from the same
    file): a re-measure that changes the store must change the page too."""
    stored = json.loads((ROOT / "docs" / "your-classes.json").read_text())["table"]
    page = (ROOT / "docs" / "your-classes.md").read_text().splitlines()
    rows = [line for line in stored.splitlines() if line.startswith("|")]
    assert len(rows) >= 3 and all(row in page for row in rows), "re-paste docs/your-classes.json's table"
