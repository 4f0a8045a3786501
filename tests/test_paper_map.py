"""Every `PAPER_MAP §x.y` / `PAPER_MAP Wn` cited anywhere in the repository names a heading of
docs/PAPER_MAP.md, and the map holds the section numbers the code base relies on."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "PAPER_MAP.md"
SCANNED = ("backbone_lab", "tests", "conf", "docs", "benchmarks", "README.md")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".txt", ".toml", ".cfg", ".sh", ".ipynb"}

# "PAPER_MAP §5.4", "PAPER_MAP §2.4–2.6", "PAPER_MAP §2.7/§2.8", "PAPER_MAP W8"
CITATION = re.compile(r"PAPER_MAP\s+((?:§\d+(?:\.\d+)?(?:\s*[–/,-]\s*§?\d+(?:\.\d+)?)*)|W\d+)")
HEADING = re.compile(r"^#{1,6}\s+(§\d+(?:\.\d+)?|W\d+)\b", re.M)


def headings(text: str) -> set[str]:
    return set(HEADING.findall(text))


def cited_labels(text: str) -> set[str]:
    """The section labels one text cites; a range "§5.8–5.10" cites its two ends."""
    labels = set()
    for match in CITATION.finditer(text):
        group = match.group(1)
        if group.startswith("W"):
            labels.add(group)
            continue
        for number in re.findall(r"\d+(?:\.\d+)?", group):
            labels.add("§" + number)
    return labels


def repository_files():
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for file in path.rglob("*"):
                if file.is_file() and file.suffix in SUFFIXES and "__pycache__" not in file.parts:
                    yield file


def test_the_citation_parser_reads_singles_ranges_and_weaknesses():
    text = "see PAPER_MAP §5.4 and PAPER_MAP §2.4–2.6, PAPER_MAP §2.7/§2.8 and PAPER_MAP W8."
    assert cited_labels(text) == {"§5.4", "§2.4", "§2.6", "§2.7", "§2.8", "W8"}
    assert headings("## §5.4 Rolling\n### W8 Fisher\ntext §9\n") == {"§5.4", "W8"}


def test_every_paper_map_citation_names_a_heading():
    known = headings(MAP.read_text(encoding="utf-8"))
    missing = []
    for file in repository_files():
        if file == MAP or file == Path(__file__).resolve():
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        for label in sorted(cited_labels(text) - known):
            missing.append(f"{file.relative_to(ROOT)}: PAPER_MAP {label}")
    assert not missing, "citations of missing PAPER_MAP sections:\n" + "\n".join(missing)


def test_the_map_holds_every_section_the_code_base_numbers():
    """The numbering the code's comments use (sections 0.1 to 9, weaknesses W1 to W16)."""
    expected = {"§0.1", "§1", "§1.1", "§1.2", "§1.3", "§2", "§3", "§4", "§5", "§6", "§7", "§8", "§9"}
    expected |= {f"§2.{i}" for i in range(1, 9)} | {f"§3.{i}" for i in range(1, 4)}
    expected |= {f"§4.{i}" for i in range(1, 5)} | {f"§5.{i}" for i in range(0, 15)}
    expected |= {f"W{i}" for i in range(1, 17)}
    assert expected <= headings(MAP.read_text(encoding="utf-8"))
