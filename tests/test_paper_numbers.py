"""The papers' numbers the report quotes live in report/paper_numbers.yaml, each with its source, and the
sections take them from there (none is written in their code)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from robustlab.report import aalp, dat, papers, scarl, shi, zhu
from robustlab.report.markdown import header, row

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "src" / "robustlab" / "report"


def leaves(values) -> list[float]:
    if isinstance(values, dict):
        return [v for value in values.values() for v in leaves(value)]
    return [values]


def test_every_entry_names_its_source_and_holds_numbers():
    keys = set(re.findall(r"^\*\*\[([^\]]+)\]\*\*", (ROOT / "docs" / "references.md").read_text(), re.M))
    assert papers.entries()
    for key, entry in papers.entries().items():
        assert set(entry) == {"source", "values"}, key
        source = entry["source"]
        assert set(source) == set(papers.SOURCE_FIELDS), key
        assert all(isinstance(source[f], str) and source[f].strip() for f in papers.SOURCE_FIELDS), key
        assert source["paper"] in keys, f"{key}: {source['paper']} is not in docs/references.md"
        assert leaves(entry["values"]) and all(isinstance(v, (int, float)) for v in leaves(entry["values"])), key


def test_no_paper_number_is_written_in_the_report_code():
    code = "\n".join(p.read_text() for p in REPORT.glob("*.py"))
    written = [f"{v:g}" for e in papers.entries().values() for v in leaves(e["values"]) if len(f"{v:g}") >= 4]
    assert len(written) > 40
    assert [v for v in written if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w])", code)] == []


@pytest.fixture
def sentinel_numbers(monkeypatch):
    """Every paper number replaced by 1000 + its position, so a quoted number shows where it came from."""
    changed = copy.deepcopy(papers.entries())
    count = iter(range(10_000))

    def mark(values):
        return {k: mark(v) for k, v in values.items()} if isinstance(values, dict) else 1000 + next(count)

    for entry in changed.values():
        entry["values"] = mark(entry["values"])
    monkeypatch.setattr(papers, "entries", lambda: changed)
    return changed


def test_the_sections_quote_the_file(sentinel_numbers):
    values = {k: e["values"] for k, e in sentinel_numbers.items()}
    t2 = values["aalp_table2"]["MNIST"]
    gaps = [t2["aalp"][c] - t2["alp"][c] for c in ("pgd-100", "cw-100")]
    assert aalp._paper_aalp_minus_alp().startswith(f"MNIST {gaps[0]:+.1f} / {gaps[1]:+.1f}")

    n = 400
    per = {"clean": np.ones(n, bool), "pgd-10": np.arange(n) < 100, "cw-10": np.arange(n) < 100}
    ev = SimpleNamespace(row=lambda: {"clean": 1.0, "pgd-10": 0.25, "cw-10": 0.25}, suite=["pgd-10", "cw-10"],
                         per_sample=per, n=n, step=0.1, clean=1.0, worst_case=0.25,
                         attacks={"pgd-10": 0.25, "cw-10": 0.25})

    def run(label, model="vgg13", **options):
        cfg = SimpleNamespace(model=SimpleNamespace(name=model, options=options), dataset=SimpleNamespace(name="d"),
                              threat_model="linf:0.1", train=SimpleNamespace(epochs=1))
        return SimpleNamespace(label=label, config=cfg, eval=ev)

    runs = {role: run(role) for role in aalp.ROLES}
    cast = SimpleNamespace(get=runs.get, runs=runs)
    claims: list[str] = []
    table3 = aalp._table3(cast, claims)
    t3 = values["aalp_table3"]
    gains = [t3["pgd_at_gd"][c] - t3["pgd_at"][c] for c in aalp.TABLE3_COLUMNS]
    assert any(line.endswith(" | " + " / ".join(f"{g:+.2f}" for g in gains) + " |") for line in table3)
    assert f"clean {gains[0]:+.2f}, PGD-10 {gains[1]:+.2f}, CW-10 {gains[2]:+.2f}" in claims[0]

    records = [run("a", variant="pure_linear"), run("b", variant="normal")]
    lines = shi._capacity(records, {r.label: {"frobenius": {"mean": 1.0}} for r in records},
                          {r.label: {"cckl": 1, "fisher_term": 1, "remainder": 0} for r in records}, [])
    cap = values["shi_capacity"]["VGG13 pure linear"]
    assert f"VGG13 pure linear {cap['clean']:.1f} / {cap['pgd']:.1f} / {cap['cw']:.1f}" in "\n".join(lines)

    assert f"≈{values['zhu_robust_downstream']['adversarial_accuracy']}%" in zhu._end_to_end_claim(run("a"), run("b"))
    first = {"n": 450, "split": "test"}
    assert f"the paper uses {values['scarl_cca']['pairs']};" in scarl._cca_setup(first, "pgd-20", "linf:0.2", 5, 0.0)

    with_pgd = SimpleNamespace(**{**vars(ev), "attacks": {"pgd-10": 0.25}})
    std, dat_run = (SimpleNamespace(**{**vars(run(label)), "eval": with_pgd}) for label in ("std", "dat"))
    cast = SimpleNamespace(get={"standard": std, "dat": dat_run}.get)
    results = {"std": {"per_image_acc": np.full(n, 0.5)}, "dat": {"per_image_acc": np.full(n, 0.5)}}
    text = "\n".join(dat._claim(cast, results, {}, n, "pgd-10"))
    setup = values["dat_setup"]
    assert f"ℓ2 ε = {setup['l2_eps']} discrete" in text and f"with a {setup['codebook_size']}-code VQGAN" in text


def test_markdown_rows_and_headers():
    assert row("run", 1, "") == "| run | 1 | |"
    assert header(["run", "clean", "flags"], "lrl") == ["| run | clean | flags |", "|---|---:|---|"]


def test_report_code_lines_fit_in_120_characters():
    long = [f"{p.name}:{i}" for p in REPORT.glob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if len(line) > 120]
    assert long == []


def test_sections_registry_lives_in_report_registry():
    from robustlab import report
    from robustlab.report import SECTIONS, registry

    assert SECTIONS is registry.SECTIONS is report.SECTIONS
    assert {"robustness", "training_curves", "aalp", "scarl", "dat", "shi", "zhu"} <= set(SECTIONS.names())
    defined = [p.name for p in REPORT.glob("*.py") if re.search(r"^SECTIONS\b.*= Registry\(", p.read_text(), re.M)]
    assert defined == ["registry.py"]
