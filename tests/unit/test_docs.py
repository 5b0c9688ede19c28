"""The repository's documentation stands alone: every link resolves inside it, nothing points outside.

The README once sent readers to a design document that lives outside the repository
and listed finished features as "not built yet"; links between the guides in docs/
also broke when the README was split into them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "partners_sdk" / "README.md",
                    *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors_in(path: Path) -> set[str]:
    return {anchor_of(heading) for heading in HEADING.findall(path.read_text())}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves_inside_the_repository(document):
    broken = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # an absolute address (http:, mailto:) is not ours to check offline
        path_part, _, fragment = target.partition("#")
        linked = (document.parent / path_part).resolve() if path_part else document
        if not linked.exists() or ROOT not in linked.parents and linked != ROOT:
            broken.append(f"{target}: no such file in the repository")
        elif fragment and linked.suffix == ".md" and fragment not in anchors_in(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_document_sends_the_reader_outside_the_repository(document):
    text = document.read_text()
    assert "../shared" not in text and "DESIGN.md" not in text


def test_the_readme_does_not_call_built_features_unbuilt():
    unbuilt = ROOT.joinpath("README.md").read_text().split("Not built yet:", 1)[-1].split("\n\n", 1)[0].lower()
    for built in ("grading", "web console", "several machines"):
        assert built not in unbuilt
