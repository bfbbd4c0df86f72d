"""The user docs hold together: every relative link between them resolves, the server's settings table is
the one the settings model generates, the README stays short, and no user doc points at an issue number
(readers have the docs, not the tracker)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
USER_DOCS = [d for d in DOCS if d.name not in ("decisions.md", "figures.md")]
"""decisions.md and figures.md record what each issue decided and measured; they may name issues."""
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(doc: Path) -> list[str]:
    """The targets of the markdown links in `doc` that point into the repository (no scheme, not an anchor)."""
    return [t for t in LINK.findall(doc.read_text()) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_the_docs_have_relative_links_to_check():
    """Not vacuous: the README links into docs/, and docs/ link to each other."""
    assert any("docs/serving.md" in t for t in relative_links(REPO / "README.md"))
    assert any(relative_links(d) for d in DOCS if d.parent.name == "docs")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_relative_links_resolve(doc):
    missing = [t for t in relative_links(doc) if not (doc.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{doc.relative_to(REPO)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda d: d.name)
def test_user_docs_name_no_issue(doc):
    found = re.findall(r"(?i)\bissues? #?\d+|\(#\d+\)", doc.read_text())
    assert not found, f"{doc.relative_to(REPO)} names issues: {found}"


def test_readme_reads_top_to_bottom_in_250_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_the_settings_table_is_the_settings_model():
    """docs/serving.md lists every server setting as serve/settings.py defines it; after adding or changing
    a setting, run `python scripts/serve_settings_table.py --write`."""
    spec = importlib.util.spec_from_file_location("serve_settings_table", REPO / "scripts" / "serve_settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (REPO / "docs" / "serving.md").read_text()
    assert module.with_table(doc) == doc, "docs/serving.md: run python scripts/serve_settings_table.py --write"
    from leanpremise.serve.settings import ServeConfig

    table = doc.split(module.BEGIN, 1)[1].split(module.END, 1)[0]
    assert all(f"`{f.json_schema_extra['env']}`" in table for f in ServeConfig.model_fields.values())
