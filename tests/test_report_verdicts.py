"""Every verdict a report section chooses from a measured difference, fed a positive, a negative and a
within-noise difference (or both sides of its threshold where the section has no noise estimate)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from robustlab.evaluate import EvalResult
from robustlab.report import aalp, dat, scarl, sections, shi, zhu
from robustlab.report.context import direction, paired_difference

N = 400


def outcomes(gained: int = 0, lost: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(base, other) per-sample correctness on N points: base gets the first half right; other gains
    `gained` of the points base gets wrong and loses `lost` of those it gets right."""
    base = np.arange(N) < N // 2
    other = base.copy()
    other[N // 2: N // 2 + gained] = True
    other[:lost] = False
    return base, other


# gained/lost pairs: +15 points (2 SE ≈ 3.6), −15 points, +0.5 points (2 SE ≈ 1.4)
UP, DOWN, FLAT = (60, 0), (0, 60), (5, 3)


def run(label: str, clean: np.ndarray, robust: np.ndarray | None = None, *, method: str = "standard", model: str = "mlp",
        options: dict | None = None) -> SimpleNamespace:
    """A stand-in for a RunRecord with an evaluation: clean and (suite pgd-10, cw-10) per-sample outcomes."""
    robust = clean if robust is None else robust
    per = {"clean": clean, "pgd-10": robust, "cw-10": robust}
    ev = EvalResult(threat="linf:0.1", suite=["pgd-10", "cw-10"], n=len(clean), clean=float(clean.mean()),
                    attacks={"pgd-10": float(robust.mean()), "cw-10": float(robust.mean())},
                    worst_case=float((clean & robust).mean()), step=0.025, per_sample=per)
    config = SimpleNamespace(method=SimpleNamespace(name=method, options={}),
                             model=SimpleNamespace(name=model, options=options or {}), dataset=SimpleNamespace(name="digits"),
                             threat_model="linf:0.1", train=SimpleNamespace(epochs=1))
    return SimpleNamespace(label=label, config=config, eval=ev)


def pair(change: tuple[int, int]) -> tuple[SimpleNamespace, SimpleNamespace]:
    """(base run, other run) whose clean and robust outcomes differ by `change`."""
    b, o = outcomes(*change)
    return run("base", b), run("other", o)


# --- the shared judgement -------------------------------------------------------------------------

def test_direction_and_the_paired_difference_it_judges():
    assert direction(3.0, 1.0) == 1 and direction(-3.0, 1.0) == -1 and direction(1.0, 1.0) == 0
    assert direction(2.0, 1.0) == 0 and direction(0.0, 0.0) == 0  # on the line: within noise
    for change, way in ((UP, 1), (DOWN, -1), (FLAT, 0)):
        base, other = outcomes(*change)
        mean, se = paired_difference(other, base)
        assert mean == pytest.approx(100 * (change[0] - change[1]) / N)
        assert direction(mean, se) == way, (change, mean, se)


# --- aalp -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,word", [(UP, "(higher;"), (DOWN, "(lower;"), (FLAT, "within noise")])
def test_aalp_difference_of_other_minus_base(change, word):
    base, other = pair(change)
    for col in ("clean", "pgd-10", "worst case"):
        text = aalp._diff(base, other, col)
        assert word in text and text.startswith(f"{100 * (change[0] - change[1]) / N:+.1f} pts"), text
    assert word in aalp._compare(*paired_difference(other.eval.per_sample["clean"], base.eval.per_sample["clean"]))


# --- zhu --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,word,reproduced", [(UP, "**higher than", True), (DOWN, "**lower than", False),
                                                    (FLAT, "**within noise (2 s.e.) of", False)])
def test_zhu_robust_representation_claim(change, word, reproduced):
    base, rob = pair(change)
    text = zhu._representation_claim("standard, linear", rob, base)
    assert word in text, text
    assert ("does not reproduce" not in text) == reproduced, text


def vulnerability(rv: list[float], bound: list[float]) -> dict:
    summary = lambda v: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v}  # noqa: E731
    return {"rv": summary(rv), "robust_accuracy_bound": summary(bound)}


@pytest.mark.parametrize("rv,expected", [([0.5, 0.6, 0.4], "RV is ≥ 0 for every run"),
                                         ([-0.5, -0.52, -0.48], "below 0 beyond two standard errors"),
                                         ([0.1, -0.2, 0.04], "within two standard errors over the critic seeds"),
                                         ([-0.3], "one critic seed")])
def test_zhu_rv_sign(rv, expected):
    text = zhu._rv_and_bound_notes([("enc", vulnerability(rv, [0.5] * len(rv)), (0.2, 450))])
    assert expected in text and text.count("RV") == 1, text


@pytest.mark.parametrize("measured,expected", [(0.9, "exceeds the estimated bound beyond two standard errors"),
                                               (0.52, "above the estimated bound for enc, but within two standard errors"),
                                               (0.3, "Every measured accuracy is at most its bound")])
def test_zhu_measured_accuracy_against_its_bound(measured, expected):
    text = zhu._rv_and_bound_notes([("enc", vulnerability([0.5, 0.6, 0.4], [0.45, 0.5, 0.55]), (measured, 450))])
    assert expected in text, text


# --- shi --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fro,acc,verdict", [([1.0, 8.0, 20.0], [0.3, 0.8, 0.9], "— reproduced"),
                                             ([20.0, 8.0, 1.0], [0.3, 0.8, 0.9], "— not reproduced"),
                                             ([1.0, 1.5, 2.0], [0.3, 0.8, 0.9], "— not reproduced"),
                                             ([1.0, 8.0, 20.0], [0.9, 0.8, 0.3], "— not reproduced")])
def test_shi_fisher_norm_growth_claim(fro, acc, verdict):
    assert verdict in shi._growth_claim("standard", [1, 2, 3], fro, acc)


@pytest.mark.parametrize("change,verdict", [(DOWN, "yes, beyond noise in every run"), (UP, "not beyond noise in any run"),
                                            (FLAT, "not beyond noise in any run"), (FLAT[::-1], "not beyond noise in any run")])
def test_shi_clean_cost_claim(change, verdict):
    natural, robust = pair(change)
    assert verdict in shi._clean_cost_claim(natural, [robust])
    _, other = pair(DOWN)
    if change != DOWN:
        assert "beyond noise only for `other`" in shi._clean_cost_claim(natural, [robust, other])


@pytest.mark.parametrize("values,verdict", [((0.1, 0.2), "— reproduced"), ((5.0, 0.2), "— partly reproduced"),
                                            ((5.0, 9.0), "— NOT reproduced")])
def test_shi_smaller_fisher_norm_claim(values, verdict):
    natural = run("standard", outcomes()[0])
    robust = [run(label, outcomes()[0], method=label) for label in ("pgd_at", "trades")]
    fisher = {"standard": {"frobenius": {"mean": 1.0}}, **{r.label: {"frobenius": {"mean": v}} for r, v in zip(robust, values)}}
    claims: list[str] = []
    shi._fisher_claim(natural, robust, fisher, claims)
    assert verdict in claims[0], claims[0]


@pytest.mark.parametrize("share,verdict", [(0.8, "— reproduced for standard"), (0.2, "— not reproduced")])
def test_shi_non_robust_share_claim(share, verdict):
    claims: list[str] = []
    shi._share_claim([run("standard", outcomes()[0])], {"standard": {"fisher_term": share, "cckl_sampled": 1.0}}, claims)
    assert verdict in claims[0], claims[0]


@pytest.mark.parametrize("change,verdict", [(UP, "reproduced (every rise"), (DOWN, "not reproduced (lower beyond"),
                                            (FLAT, "not resolved (within two standard errors")])
def test_shi_capacity_rise_verdict(change, verdict):
    small, large = pair(change)
    assert shi._rise_verdict([(small, large)], ["clean", "pgd-10"]).startswith(verdict)
    # one falling column decides, whatever the others do
    b, o = outcomes(*UP)
    mixed = run("large", o, outcomes(*DOWN)[1])
    assert shi._rise_verdict([(run("small", b), mixed)], ["clean", "pgd-10"]).startswith("not reproduced (lower beyond two standard errors: pgd-10")


@pytest.mark.parametrize("change,verdict", [(UP, "— reproduced"), (DOWN, "— not reproduced"), (FLAT, "— not resolved"),
                                            (FLAT[::-1], "— not resolved")])
def test_shi_capacity_claims_in_the_section(change, verdict):
    """Through the section's capacity table: the VGG13 variants and two ResNets, each step changing by `change`."""
    b, o = outcomes(*change)
    o2 = o.copy()
    o2[N - 60:] = True  # the third VGG gains 60 more points over the second one: beyond noise
    records = [run("linear", b, model="vgg13", options={"variant": "pure_linear"}),
               run("normal", o, model="vgg13", options={"variant": "half_linear"}),
               run("r20", b, model="resnet20"), run("r32", o, model="resnet32")]
    if change == UP:
        records.insert(2, run("full", o2, model="vgg13", options={"variant": "normal"}))
    zero = {"frobenius": {"mean": 1.0}}
    claims: list[str] = []
    shi._capacity(records, {r.label: zero for r in records}, {r.label: {"cckl": 1, "fisher_term": 1, "remainder": 0} for r in records}, claims)
    assert len(claims) == 2 and all(verdict in c for c in claims), claims


# --- dat --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,word", [(UP, "higher ("), (DOWN, "lower ("), (FLAT, "the same within noise (")])
def test_dat_direction(change, word):
    base, other = outcomes(*change)
    assert dat._direction(*paired_difference(other, base), "higher", "lower").startswith(word)


@pytest.mark.parametrize("clean,corruption,verdict", [
    ((0.0, 1.0), (5.0, 1.0), "consistent with the claim (clean accuracy kept, corruption accuracy higher)"),
    ((5.0, 1.0), (5.0, 1.0), "consistent with the claim (clean accuracy kept, corruption accuracy higher)"),
    ((-5.0, 1.0), (5.0, 1.0), "not reproduced (clean accuracy lower, corruption accuracy higher)"),
    ((0.0, 1.0), (-5.0, 1.0), "not reproduced (clean accuracy kept, corruption accuracy lower)"),
    ((0.0, 1.0), (1.0, 1.0), "not reproduced (clean accuracy kept, corruption accuracy the same within noise)")])
def test_dat_claim_verdict(clean, corruption, verdict):
    assert dat._verdict(clean, corruption, None) == verdict
    assert dat._verdict(clean, corruption, (-5.0, 1.0)).endswith("PGD-AT costs clean accuracy here, the contrast the paper draws")
    for at in ((5.0, 1.0), (-1.0, 1.0)):
        assert "PGD-AT does not cost clean accuracy" in dat._verdict(clean, corruption, at)


# --- scarl ------------------------------------------------------------------------------------------

def test_scarl_semantic_gap_follows_its_sign():
    positive = scarl._semantic_gap({"natural": 0.2, "adversarial": 0.1})
    assert positive.count("more than random") == 2 and "semantic" in positive
    negative = scarl._semantic_gap({"natural": -0.2, "adversarial": -0.1})
    assert "more than random" not in negative and negative.count("less than random") == 2, negative
    small = scarl._semantic_gap({"natural": 0.01, "adversarial": -0.03})
    assert small.startswith("Small") and "more than random" not in small
    mixed = scarl._semantic_gap({"natural": 0.2, "adversarial": -0.01})
    assert "Natural inputs: the word vectors correlate more" in mixed and "Adversarial inputs: the word vectors correlate about as much" in mixed


def test_scarl_claims_with_word_vectors_below_the_control():
    """The section's claims when the word vectors correlate less than random class vectors (gap −0.1)."""
    labels = ["standard", "pgd_at", "scarl"]
    cca = {m: {s: {"first": 0.5 + 0.1 * i, "control_first": 0.6 + 0.1 * i} for s in ("natural", "adversarial")}
           for i, m in enumerate(labels)}
    sims = {m: {"spearman": 0.2 * i} for i, m in enumerate(labels)}
    text = scarl._claims(cca, sims, {m: 0.1 * (i + 1) for i, m in enumerate(labels)}, 5, 10, "scarl")
    assert "−0.100" in text or "-0.100" in text
    assert "more than random" not in text and "part of the correlation is semantic" not in text, text
    assert "less than random class vectors" in text


def test_scarl_rank_verdicts():
    assert [scarl._rank_verdict(r) for r in (0.9, 0.3, 0.0, -0.3, -0.9, float("nan"))] == [
        "holds", "holds only weakly", "does not hold", "does not hold", "is reversed", "cannot be tested"]
    assert [scarl._strength(r) for r in (0.8, 0.6, 0.3, -0.4)] == ["strong", "moderate", "weak", "absent"]


# --- sections: AutoAttack beside the paper protocol ---------------------------------------------------

@pytest.mark.parametrize("aa_gained,above", [(0, False), (5, False), (10, True)])
def test_autoattack_above_the_paper_protocol_is_named(aa_gained, above):
    clean = np.ones(N, dtype=bool)
    paper = np.arange(N) < N // 2
    record = run("m", clean, paper)
    aa_ok = paper.copy()
    aa_ok[N // 2: N // 2 + aa_gained] = True  # AutoAttack fails on a point the paper protocol breaks
    aa_ok[:5] = False  # and breaks five the paper protocol does not
    res = EvalResult(threat="linf:0.1", suite=["autoattack"], n=N, clean=1.0, attacks={"autoattack": float(aa_ok.mean())},
                     worst_case=float(aa_ok.mean()), step=0.0, per_sample={"clean": clean, "autoattack": aa_ok})
    text = sections.autoattack_table([record], {"m": (res, "autoattack")})
    assert ("is above the paper protocol's worst case for: m" in text) == above, text
    assert ("at most the paper protocol's worst case" in text) == (not above), text
