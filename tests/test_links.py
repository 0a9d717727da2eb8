"""Links and section references between the README, docs/ and the notebooks point at something that exists.

A heading renamed in docs/ (``## Also tried: ten knobs`` became ``twelve knobs``) silently broke a README
link once; these tests read every Markdown link ``[text](path#anchor)`` and every prose reference of the form
``docs/page.md, "Section name"`` and check the file and the heading (or bold paragraph label) exist.
"""

import json
import re

import pytest
from conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.ipynb"))]


def _markdown(path) -> str:
    """The Markdown of a page or of a notebook's markdown cells, without fenced code blocks."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _headings(path) -> list[str]:
    return re.findall(r"^#{1,6} +(.+?)\s*$", _markdown(path), re.M)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_github_anchor():
    assert github_anchor("Also tried: twelve knobs of the recipe, three seeds each") == (
        "also-tried-twelve-knobs-of-the-recipe-three-seeds-each"
    )
    assert github_anchor("Why the demo trains at lr 1e-3") == "why-the-demo-trains-at-lr-1e-3"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_markdown_links_resolve(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _markdown(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file) if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix in (".md", ".ipynb") and anchor not in map(github_anchor, _headings(path)):
            broken.append(f"{target}: no heading with that anchor in {path.name}")
    assert broken == []


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_section_references_resolve(doc):
    """``docs/seeds.md``, "twelve knobs of the recipe": the quoted words are part of a heading or of a bold
    paragraph label of that page."""
    text = _markdown(doc).replace("\n", " ")
    broken = []
    for file, name in re.findall(r"`?(docs/[\w.-]+\.md)`?\)?,? *\"([^\"]+)\"", text):
        page = ROOT / file
        if not page.exists():
            broken.append(f"{file}: no such file")
            continue
        labels = _headings(page) + re.findall(r"^\*\*(.+?)\*\*", _markdown(page), re.M)
        if not any(name.lower() in label.lower() for label in labels):
            broken.append(f'{file}, "{name}": no such section')
    assert broken == []
