"""CCKL against a brute-force double loop, its JS lower bounds, the Fisher decomposition, the tracking
callback and `robustlab analyze --what fisher,cckl`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from robustlab import cli, models
from robustlab.analysis.cckl import cckl, cckl_decomposition, label_js_bound, pairwise_js_bound
from robustlab.config import make_run_config
from robustlab.train import train_run


def _kl(p, q):
    return float((p * (p.log() - q.log())).sum())


def _js(p, q):
    m = (p + q) / 2
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def _random_case(seed, n=30, k=6, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    lp = F.log_softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, 4, (n,), generator=g)  # unbalanced classes, some labels never predicted
    return lp, y


def test_cckl_matches_brute_force_double_loop():
    for seed, scale in ((0, 0.1), (1, 3.0), (2, 12.0)):
        lp, y = _random_case(seed, scale=scale)
        p = lp.exp()
        pairs = [(i, j) for i in range(len(y)) for j in range(len(y)) if y[i] != y[j]]
        brute = sum(_kl(p[i], p[j]) for i, j in pairs) / len(pairs)
        assert cckl(lp, y) == pytest.approx(brute, rel=1e-10)
        js = 2 * sum(_js(p[i], p[j]) for i, j in pairs) / len(pairs)
        assert pairwise_js_bound(lp, y, block=7) == pytest.approx(js, rel=1e-10)


def test_js_bounds_never_exceed_cckl():
    for seed in range(40):
        scale = [0.01, 0.5, 3.0, 20.0][seed % 4]
        lp, y = _random_case(seed, n=24, scale=scale)
        if seed % 3 == 0:  # confident and mostly correct predictions: the label bound is far from 0
            lp = F.log_softmax(scale * F.one_hot(y, 6).double() + torch.randn(24, 6, dtype=torch.float64), 1)
        c, a, b = cckl(lp, y), pairwise_js_bound(lp, y), label_js_bound(lp, y)
        assert b <= a + 1e-12 and a <= c + 1e-12


def test_label_bound_rises_to_two_log_two_for_a_perfect_classifier():
    y = torch.arange(20) % 5
    lp = F.log_softmax(60.0 * F.one_hot(y, 5).double(), 1)
    assert label_js_bound(lp, y) == pytest.approx(2 * math.log(2), rel=1e-6)
    assert cckl(lp, y) > 50  # confident, correct, different outputs: the KL is large


def test_decomposition_uses_the_exact_quadratic_fisher_term():
    torch.manual_seed(0)
    model = models.create("small_cnn", 10, 1, 8, width=4, hidden=16).double().eval()
    x = torch.rand(40, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(40) % 4
    lp = F.log_softmax(model(x), 1).detach()
    d = cckl_decomposition(model, x, y, lp, anchors=5, partners=7, seed=1, batch_size=2)
    assert d["kl"].shape == (5, 7) and len(set(d["anchor"].tolist())) == 5
    assert bool((y[d["anchor"], None] != y[d["partner"]]).all())
    for a in range(2):
        i = int(d["anchor"][a])
        f = lambda v: model(v.view(1, 1, 8, 8)).squeeze(0)  # noqa: E731
        jac = torch.autograd.functional.jacobian(f, x[i].flatten())
        p = lp[i].exp()
        fm = jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac
        for b in range(7):
            j = int(d["partner"][a, b])
            delta = (x[j] - x[i]).flatten()
            assert float(d["fisher"][a, b]) == pytest.approx(float(0.5 * delta @ fm @ delta), rel=1e-8)
            assert float(d["kl"][a, b]) == pytest.approx(_kl(lp[i].exp(), lp[j].exp()), rel=1e-8)
    assert torch.allclose(d["kl"] - d["fisher"], d["remainder"])


def _tiny_run(callbacks):
    return make_run_config({
        "dataset": "digits", "model": {"name": "small_cnn", "width": 4, "hidden": 16}, "method": "standard",
        "threat": "linf:0.2", "train": {"epochs": 2, "batch_size": 128, "select": {"by": "clean"}},
        "callbacks": callbacks, "device": "cpu"})


def test_tracking_callback_records_per_epoch_without_changing_training(tmp_path, capsys):
    torch.manual_seed(0)  # the model's initialisation draws from the global generator
    tracked = train_run(_tiny_run([{"name": "fisher_tracking", "n": 64, "anchors": 4, "partners": 8}]), tmp_path / "a", quiet=True)
    torch.manual_seed(0)
    plain = train_run(_tiny_run([]), tmp_path / "b", quiet=True)
    for rec in tracked.history:
        for key in ("track_acc", "track_fisher_fro", "track_fisher_spectral", "track_cckl", "track_cckl_fisher",
                    "track_cckl_remainder", "track_cckl_bound"):
            assert math.isfinite(rec[key]), key
        assert rec["track_fisher_spectral"] <= rec["track_fisher_fro"] <= rec["track_fisher_trace"] + 1e-12
        assert rec["track_cckl_bound"] <= rec["track_cckl"]
    assert [r["val_clean"] for r in tracked.history] == [r["val_clean"] for r in plain.history]
    assert tracked.best_epoch == plain.best_epoch
    # the analyses run on any trained model from the command line
    assert cli.main(["analyze", str(tmp_path / "a"), "--what", "fisher,cckl", "--set", "n=100", "--set", "eps=[0.05]",
                     "--set", "anchors=8", "--quiet", "--device", "cpu"]) == 0
    fisher = json.loads((tmp_path / "a" / "analysis" / "fisher.json").read_text())
    result = json.loads((tmp_path / "a" / "analysis" / "cckl.json").read_text())
    assert fisher["n"] == 100 and fisher["max_rank"] <= 9 and fisher["attack"][0]["eps"] == 0.05
    assert result["bound_label_js"] <= result["bound_pairwise_js"] <= result["cckl"]
    assert (tmp_path / "a" / "figures" / "fisher.png").exists() and (tmp_path / "a" / "figures" / "cckl_pairs.png").exists()
