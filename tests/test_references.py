"""docs/references.md lists every work the repository cites, and the repository cites by those keys (or by
authors and arXiv id), never by a paper number or a path outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"\*\*\[(\w+)\]\*\* [^*]+?\.\s\*[^*]+\*", re.S)  # **[key]** Authors. *Title.* ...
# spelled in pieces so that this file does not match them itself
MARKERS = re.compile("|".join(["paper 00" + "[0-4]", "shared" + "/", "algorithms" + r"\.md", r"\[" + "INF",
                               r"\[" + "SRC", r"\[" + "MEM", r"\[" + "CODE"]))


def references() -> dict[str, str]:
    """{key: its entry} of every paragraph of docs/references.md that starts with **[key]**."""
    paragraphs = (ROOT / "docs" / "references.md").read_text().split("\n\n")
    entries = {m.group(1): p for p in paragraphs if (m := ENTRY.match(p.strip()))}
    starts = [p for p in paragraphs if p.strip().startswith("**[") and not p.strip().startswith("**[inferred]")]
    assert len(entries) == len(starts)  # every entry has the form
    return entries


def cited_files() -> list[Path]:
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "configs").glob("*.yaml"),
             *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").glob("*.py"),
             ROOT / "src" / "robustlab" / "report" / "paper_numbers.yaml"]
    files += list((ROOT / "src" / "robustlab").rglob("*.py"))
    return files


def test_every_entry_has_authors_title_and_a_year():
    refs = references()
    assert {"SCARL", "Zhu20", "AALP", "DAT", "Shi", "Madry18", "TRADES", "ALP", "AutoAttack", "Square", "FAB", "HD19",
            "MINE", "DIM", "InfoNCE", "Carlini19", "VQGAN", "VQVAE"} <= set(refs)
    for key, entry in refs.items():
        assert re.search(r"\b(19|20)\d\d\b", entry), key
    assert "**[inferred]**: a choice the cited paper leaves open" in (ROOT / "docs" / "references.md").read_text()
    for key, arxiv in (("Zhu20", "2002.11798"), ("AALP", "2005.11904"), ("DAT", "2209.07735"), ("Shi", "1906.02494"),
                       ("SCARL", "OpenReview SWUGykek_T")):
        assert arxiv in refs[key], key


def test_every_key_cited_in_docs_and_configs_is_listed():
    refs = references()
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "configs").glob("*.yaml"),
                 ROOT / "src" / "robustlab" / "report" / "paper_numbers.yaml"]:
        for key in re.findall(r"\[([A-Z][A-Za-z0-9]+)\]", path.read_text()):
            assert key in refs, f"{path.name} cites [{key}], which docs/references.md does not list"


def test_no_paper_numbers_or_outside_paths():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in cited_files()
             for i, line in enumerate(p.read_text().splitlines(), 1) if MARKERS.search(line)]
    assert found == []


def test_readme_links_the_references():
    assert "(docs/references.md)" in (ROOT / "README.md").read_text()
