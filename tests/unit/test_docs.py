"""The design documents in docs/ are where the code says they are, and link to what exists."""

from __future__ import annotations

import re

from tests.support import ROOT

# A path under docs/ as comments and docstrings cite it, e.g. docs/adr/0001-claims-and-leases.md.
CITED = re.compile(r"\bdocs/[\w./-]+\.md\b")
# The target of a relative Markdown link: [text](target) or [text](target#anchor).
LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)")


def test_every_document_the_code_cites_exists() -> None:
    cited = {
        match
        for folder in ("src", "tests")
        for path in (ROOT / folder).rglob("*.py")
        for match in CITED.findall(path.read_text(encoding="utf-8"))
    }

    assert cited, "the code cites no document: this test would check nothing"
    assert {path for path in cited if not (ROOT / path).is_file()} == set()


def test_links_between_documents_resolve() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [
        f"{document.relative_to(ROOT)}: {target}"
        for document in documents
        for target in LINK.findall(document.read_text(encoding="utf-8"))
        if not (document.parent / target).exists()
    ]

    assert len(documents) > 3
    assert broken == []
