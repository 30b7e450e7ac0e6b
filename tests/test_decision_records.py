"""The decision records behind the code's one-line reasons: every record the code names exists, each
record has the sections a reader looks for, and the index lists every record."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "decisions"
CODE_FOLDERS = ("dags", "plugins", "spark_jobs", "rehearsal", "scripts", "bench")
CITATION = re.compile(r"docs/decisions/(\d{4}-[a-z0-9-]+\.md)")
SECTIONS = ["Context", "Options measured", "Decision", "Date", "Sources"]


def records() -> list[Path]:
    return sorted(RECORDS.glob("[0-9][0-9][0-9][0-9]-*.md"))


def citations() -> dict[str, list[str]]:
    """Record file name -> the code files that name it."""
    cited: dict[str, list[str]] = {}
    for folder in CODE_FOLDERS:
        for source in sorted((ROOT / folder).rglob("*.py")):
            for name in CITATION.findall(source.read_text()):
                cited.setdefault(name, []).append(str(source.relative_to(ROOT)))
    return cited


def test_every_record_the_code_names_exists():
    cited = citations()
    assert cited, "no code names a decision record"
    missing = {name: files for name, files in cited.items() if not (RECORDS / name).is_file()}
    assert not missing, f"code names records that do not exist: {missing}"


def test_each_record_has_its_sections_in_order_and_a_dated_decision():
    assert records()
    for record in records():
        text = record.read_text()
        number = record.name[:4]
        assert text.startswith(f"# {number}. "), f"{record.name}: its title starts with '# {number}. '"
        headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
        assert headings == SECTIONS, f"{record.name}: sections {headings}, expected {SECTIONS}"
        date_section = text.split("## Date", 1)[1].split("## Sources", 1)[0]
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", date_section), f"{record.name}: no date in its Date section"


def test_the_index_lists_every_record_once_and_nothing_else():
    index = (RECORDS / "index.md").read_text()
    linked = re.findall(r"^\| \[\d{4}\]\((\d{4}-[a-z0-9-]+\.md)\) \|", index, re.MULTILINE)
    assert linked == [record.name for record in records()]
    numbers = [name[:4] for name in linked]
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)], "records are numbered 0001, 0002, ... in order"
