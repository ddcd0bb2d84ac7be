"""docs/guides/audit.md lists every finding `smtpbee audit` can give, from its catalogue."""

from __future__ import annotations

from pathlib import Path

from smtpbee.cli._audit_checks import CATALOGUE

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "audit.md"
BEGIN = "<!-- catalogue: generated from smtpbee.cli._audit_checks.CATALOGUE -->\n"
END = "<!-- end of catalogue -->\n"


def render_catalogue() -> str:
    """The findings table: one row per id, in the catalogue's order."""
    rows = ["| id | severity | what it means | source |", "| --- | --- | --- | --- |"]
    for finding_id, kind in CATALOGUE.items():
        rows.append(f"| `{finding_id}` | {kind.severity} | {kind.title} | {kind.source} |")
    return "\n".join(rows) + "\n"


def committed_catalogue() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END, start)]


def test_the_guide_lists_every_finding_as_the_catalogue_declares_it() -> None:
    # To refresh: python -c "import tests.test_audit_docs as t; t.write()"
    assert committed_catalogue() == render_catalogue()


def write() -> None:  # pragma: no cover - a maintenance helper, not a test
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    GUIDE.write_text(text[:start] + render_catalogue() + text[text.index(END, start) :], "utf-8")
