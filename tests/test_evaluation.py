"""Evaluation: resumable runs, AutoAttack stages, sanity flags (each tripped by a model built for it,
none on a normally trained model), the eval/sweep commands and the study report's AutoAttack column."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.config import FlagConfig, make_run_config
from robustlab.data import Split
from robustlab.errors import RobustlabError
from robustlab.evaluate import EvalResult, evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A small CNN trained for a few epochs with PGD-AT on digits: a normal, honestly robust model."""
    from robustlab.train import train_run

    run_dir = tmp_path_factory.mktemp("runs") / "pgd_at"
    cfg = make_run_config({
        "dataset": "digits", "model": {"name": "small_cnn", "width": 8, "hidden": 32},
        "method": {"name": "pgd_at", "attack_steps": 5}, "threat": "linf:0.15",
        "train": {"seed": 1, "epochs": 6, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003, "weight_decay": 0},
                  "schedule": {"name": "cosine"}, "select": {"by": "last"}},
        "eval": {"suite": "quick", "extra_suites": [{"suite": "autoattack", "max_samples": 40}], "max_samples": 120,
                 "flags": {"max_samples": 60}},
    })
    torch.manual_seed(1)  # = train.seed: the same initial weights whether or not the trainer seeds them itself
    train_run(cfg, run_dir, dataset=digits, quiet=True)
    return cfg, run_dir


def _linear_split(make, n=40, seed=0):
    """A 10-class linear model (conftest's factory `make`) and interior points it labels, three of them wrongly."""
    model = make(num_classes=10, dim=64, seed=seed).eval()
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10  # a few clean mistakes
    return model, Split(x, y)


# --- resumable evaluation -----------------------------------------------------------------------------

SUITE = ["fgsm", "pgd-5", {"name": "autoattack", "version": "custom", "attacks": ["apgd-ce", {"name": "square", "queries": 60}]}]


def test_an_interrupted_evaluation_resumes_to_the_identical_result(tmp_path, linear_model):
    model, split = _linear_split(linear_model)
    kw = dict(batch_size=8, seed=1, quiet=True, num_classes=10)
    full = evaluate(model, split, "linf:0.03", SUITE, **kw)
    seen = []

    def stop_after_some(label, b):
        seen.append((label, b))
        if label == "pgd-5" and b == 2:
            raise KeyboardInterrupt

    state = tmp_path / "eval_state"
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, split, "linf:0.03", SUITE, state_path=state, on_batch_done=stop_after_some, **kw)
    assert (tmp_path / "eval_state.json").exists() and (tmp_path / "eval_state.npz").exists()
    saved = json.loads((tmp_path / "eval_state.json").read_text())
    assert saved["batches"] == {"fgsm": 5, "pgd-5": 3}
    resumed_batches = []
    again = evaluate(model, split, "linf:0.03", SUITE, state_path=state, on_batch_done=lambda l, b: resumed_batches.append((l, b)), **kw)
    assert ("fgsm", 0) not in resumed_batches and ("pgd-5", 2) not in resumed_batches and ("pgd-5", 3) in resumed_batches
    assert again.attacks == full.attacks and again.stages == full.stages and again.worst_case == full.worst_case
    assert set(again.per_sample) == set(full.per_sample)
    for k in full.per_sample:
        np.testing.assert_array_equal(again.per_sample[k], full.per_sample[k])
    assert not (tmp_path / "eval_state.json").exists()  # a finished evaluation leaves no state behind


def test_pgd_k_of_a_suite_is_the_first_k_steps_of_its_longest_pgd_bit_for_bit(trained, digits, tmp_path):
    """PGD-2/5 and CW-2/5 beside PGD-12 / CW-12 are read off the longer attacks' iterates, not run again: each
    per-sample result equals the attack run alone, on a robust model whose points break at many different
    steps; also when the evaluation is interrupted and resumed inside the longer attack."""
    from robustlab.checkpoint import load_model

    _, run_dir = trained
    model, _ = load_model(run_dir)
    split = digits.test.head(120)
    kl = [{"name": "pgd", "steps": k, "loss": "kl"} for k in (2, 4)]  # no point leaves early: each runs on its own
    suite = ["pgd-2", "pgd-5", "cw-5", "pgd-12", "cw-2", "cw-12", {"name": "pgd", "steps": 3, "restarts": 2}, *kl]
    kw = dict(batch_size=20, seed=3, quiet=True, num_classes=10)
    shared = evaluate(model, split, "linf:0.15", suite, **kw)
    alone = {}
    for spec in suite:
        alone.update(evaluate(model, split, "linf:0.15", [spec], **kw).per_sample)
    assert list(shared.per_sample) == list(alone) and list(shared.seconds)[1:] == shared.suite
    for key, robust in alone.items():
        np.testing.assert_array_equal(shared.per_sample[key], robust, err_msg=key)
    # the steps between matter on this model: points break after step 2, after step 5, after step 12
    assert shared.attacks["pgd-2"] > shared.attacks["pgd-5"] and shared.attacks["cw-2"] > shared.attacks["cw-5"] > shared.attacks["cw-12"]
    assert shared.seconds["pgd-2"] == shared.seconds["cw-5"] == 0.0 < shared.seconds["pgd-12"]
    assert shared.seconds["pgd(steps=3,restarts=2)"] > 0.0  # two restarts: not a prefix, run on its own
    assert shared.seconds["pgd(steps=2,loss=kl)"] > 0.0

    def stop(label, b):
        if label == "pgd-12" and b == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(model, split, "linf:0.15", suite, state_path=tmp_path / "state", on_batch_done=stop, **kw)
    assert json.loads((tmp_path / "state.json").read_text())["batches"]["pgd-12"] == 2
    resumed = evaluate(model, split, "linf:0.15", suite, state_path=tmp_path / "state", **kw)
    for key, robust in alone.items():
        np.testing.assert_array_equal(resumed.per_sample[key], robust, err_msg=key)


def test_a_state_from_other_settings_is_not_resumed(tmp_path, linear_model):
    model, split = _linear_split(linear_model)
    state = tmp_path / "s"

    def stop(label, b):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(model, split, "linf:0.03", ["pgd-5"], state_path=state, on_batch_done=stop, batch_size=8, quiet=True)
    calls = []
    evaluate(model, split, "linf:0.05", ["pgd-5"], state_path=state, on_batch_done=lambda l, b: calls.append(b), batch_size=8, quiet=True)
    assert calls[0] == 0


def test_autoattack_is_one_entry_with_per_component_accuracy(tmp_path, linear_model):
    model, split = _linear_split(linear_model)
    r = evaluate(model, split, "linf:0.03", SUITE, quiet=True, num_classes=10)
    label = r.suite[-1]
    assert list(r.stages[label]) == ["apgd-ce", "square"]
    assert r.stages[label]["apgd-ce"] >= r.stages[label]["square"] == r.attacks[label]
    r.save(tmp_path)
    back = EvalResult.load(tmp_path)
    assert back.stages == r.stages and back.worst_case == r.worst_case
    np.testing.assert_array_equal(back.robust(), r.robust())


def test_evaluate_refuses_probabilities_and_wrong_class_counts(linear_model):
    model, split = _linear_split(linear_model)
    with pytest.raises(RobustlabError, match="probabilities"):
        evaluate(nn.Sequential(model, nn.Softmax(1)), split, "linf:0.03", ["fgsm"], quiet=True, num_classes=10)
    with pytest.raises(RobustlabError, match=r"\(40, 12\).*\(40, 10\)"):
        evaluate(model, split, "linf:0.03", ["fgsm"], quiet=True, num_classes=12)


# --- sanity flags: one model built to trip each ---------------------------------------------------------

def _flags(model, split, threat, suite, **cfg):
    r = evaluate(model, split, threat, suite, quiet=True, num_classes=model.num_classes, flags=FlagConfig(**cfg))
    return {f["name"]: f for f in r.flags}


class Quantised(nn.Module):
    """A linear model behind a non-differentiable input quantisation (round to 1/4)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.num_classes = inner.num_classes

    def forward(self, x):
        return self.inner(torch.round(x * 4) / 4)


class Noisy(nn.Module):
    """A randomised defence: Gaussian noise on the input at every forward pass."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.num_classes = inner.num_classes

    def forward(self, x):
        return self.inner(x + 0.05 * torch.randn_like(x))


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return -g


class Lying(nn.Module):
    """A model whose backward pass returns the negated gradient: white-box attacks walk the wrong way."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.num_classes = inner.num_classes

    def forward(self, x):
        return self.inner(_Reverse.apply(x))


class Bump(nn.Module):
    """Two classes; the margin of class 0 along t = mean(x) − 0.5 (in units of eps = 0.1) falls, then rises
    (a trap for small steps), then drops below 0 at 0.9 eps: one FGSM step of size eps jumps over the trap,
    PGD with steps of eps/4 oscillates inside it."""

    num_classes = 2

    def forward(self, x):
        s = (x.flatten(1).mean(1) - 0.5) / 0.1
        b = 1 - 1.5 * s + 3.5 * torch.relu(s - 0.3) - 42 * torch.relu(s - 0.85)
        return torch.stack([b / 2, -b / 2], 1)


class Detector(nn.Module):
    """Class 0 while mean(x) < 0.55, plus a non-differentiable 'detector' that forces class 0 whenever a pixel
    exceeds 0.65: small attacks work, large ones trip the detector, so accuracy rises with eps."""

    num_classes = 2

    def forward(self, x):
        flat = x.flatten(1)
        z0 = 20 * (0.55 - flat.mean(1)) + 50 * (flat.amax(1) > 0.65).float()
        return torch.stack([z0, torch.zeros_like(z0)], 1)


def _level_split(levels, n=40):
    """Constant images (pixel value = level) of class 0."""
    x = levels.view(-1, 1, 1, 1).expand(n, 1, 8, 8).clone()
    return Split(x, torch.zeros(n, dtype=torch.long))


def test_zero_gradient_flag_on_input_quantisation(linear_model):
    inner, split = _linear_split(linear_model)
    flags = _flags(Quantised(inner), split, "linf:0.03", ["fgsm", "pgd-10"])
    assert flags["zero_grad"]["raised"] and flags["zero_grad"]["value"] == 1.0
    assert flags["large_eps"]["raised"]  # blind attacks cannot break it even with an unbounded eps


def test_randomised_flag_on_a_noisy_model(linear_model):
    inner, split = _linear_split(linear_model)
    flags = _flags(Noisy(inner), split, "linf:0.03", ["fgsm", "pgd-10"])
    assert flags["randomised"]["raised"]
    assert not flags["zero_grad"]["raised"]


def test_square_flag_when_gradients_lie(linear_model):
    inner, split = _linear_split(linear_model)
    flags = _flags(Lying(inner), split, "linf:0.05", ["fgsm", "pgd-10"], square_queries=300)
    assert flags["square"]["raised"] and flags["square"]["value"] > 0.05
    assert not flags["zero_grad"]["raised"] and not flags["randomised"]["raised"]


def _square_count_by_definition(model, split: Split, result, queries: int, seed: int = 0) -> int:
    """The `square` flag's count from its definition: clean-correct points that no white-box attack of the suite
    broke and that the same Square probe (same seed, one batch) breaks, checked by a fresh forward pass."""
    from robustlab import attacks

    survivors = result.robust()  # clean-correct and missed by every attack of the suite
    idx = torch.as_tensor(np.flatnonzero(survivors))
    x, y = split.x[idx], split.y[idx]
    res = attacks.build({"name": "square", "queries": queries}, result.threat, seed=seed).run(
        model, x, y, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert bool((model(res.x_adv).argmax(1) != y)[res.success].all())
    return int(res.success.sum())


@pytest.mark.parametrize("which", ["trained", "linear"])
def test_square_flag_counts_only_clean_correct_points_on_sound_models(which, request, linear_model):
    """A model's clean mistakes are not points 'broken by Square but missed by every white-box attack': the
    flag on a sound model with clean errors counts exactly the clean-correct points Square alone breaks."""
    if which == "trained":
        from robustlab.checkpoint import load_model

        cfg, run_dir = request.getfixturevalue("trained")
        model, _ = load_model(run_dir)
        split, threat = request.getfixturevalue("digits").test.head(60), "linf:0.15"
    else:
        model, split = _linear_split(linear_model, n=60)
        threat = "linf:0.05"
    model.eval()
    r = evaluate(model, split, threat, ["fgsm", "pgd-5"], quiet=True, num_classes=10,
                 flags=FlagConfig(max_samples=60, square_queries=300))
    assert r.clean < 1.0  # the model makes clean mistakes, the case the flag used to count as Square's
    flag = next(f for f in r.flags if f["name"] == "square")
    true = _square_count_by_definition(model, split, r, 300)
    assert flag["detail"] == f"a Square probe (300 queries) breaks {true} of 60 points that every white-box attack of the suite missed"
    assert flag["value"] == true / 60


def test_single_step_flag_when_fgsm_jumps_over_a_trap():
    g = torch.Generator().manual_seed(0)
    u = 0.1 * (2 * torch.rand(40, 1, 8, 8, generator=g) - 1)
    split = Split(0.5 + u - u.mean((1, 2, 3), keepdim=True), torch.zeros(40, dtype=torch.long))
    r = evaluate(Bump(), split, "linf:0.1", "quick", quiet=True, flags=FlagConfig())
    flags = {f["name"]: f for f in r.flags}
    assert r.attacks["fgsm"] == 0.0 and r.attacks["pgd-20"] == 1.0
    assert flags["single_step"]["raised"] and flags["single_step"]["value"] == 1.0


def test_large_eps_and_monotonicity_flags_on_a_detector():
    levels = torch.linspace(0.3, 0.5, 40)
    flags = _flags(Detector(), _level_split(levels), "linf:0.1", ["pgd-10"])
    assert flags["non_monotone"]["raised"] and flags["non_monotone"]["value"] > 0.3
    assert flags["large_eps"]["raised"]
    assert not flags["zero_grad"]["raised"]


# --- commands and the study report -------------------------------------------------------------------

def test_eval_command_writes_another_suite_beside_the_run_suite(trained, capsys):
    from robustlab.cli import main

    _, run_dir = trained
    assert main(["eval", str(run_dir), "--suite", "fgsm,pgd-5", "--n", "30", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "pgd-5" in out and "sanity flags" in out
    r = EvalResult.load(run_dir, "eval_custom")
    assert r.suite == ["fgsm", "pgd-5"] and r.n == 30 and len(r.flags) == 6
    assert not (run_dir / "eval_custom_state.json").exists() and not (run_dir / "eval.json").exists()


def test_sweep_command_draws_the_robustness_curve(trained, tmp_path):
    from robustlab.cli import main

    _, run_dir = trained
    assert main(["sweep", str(run_dir), "--eps", "0.05,0.15,0.3", "--suite", "fgsm,pgd-5", "--n", "40", "--out", str(tmp_path), "--quiet"]) == 0
    curve = json.loads((tmp_path / "sweep.json").read_text())[run_dir.name]
    assert curve["eps"] == [0.0, 0.05, 0.15, 0.3]
    acc = curve["worst_case"]
    assert acc[0] > acc[1] >= acc[2] >= acc[3]
    assert (tmp_path / "robustness_curve.png").stat().st_size > 1000


def test_study_evaluation_of_a_normal_model_autoattack_beside_the_worst_case_and_no_flag(trained, digits):
    from robustlab.config import StudyConfig
    from robustlab.report import RunRecord, StudyContext
    from robustlab.report.sections import robustness
    from robustlab.study import evaluate_run, extra_evals

    cfg, run_dir = trained
    primary = evaluate_run(cfg, run_dir, data_root=None, device=torch.device("cpu"), quiet=True, dataset=digits)
    extra = extra_evals(cfg, run_dir)
    assert primary.n == 120 and extra["autoattack"].n == 40
    # a model trained normally (PGD-AT, a few epochs) raises none of the sanity flags
    assert len(primary.flags) == 6 and all(f["checked"] for f in primary.flags)
    assert [f["name"] for f in primary.flags if f["raised"]] == []
    assert next(f for f in primary.flags if f["name"] == "square")["n"] == 40  # Square from AutoAttack
    assert 0.1 < extra["autoattack"].worst_case < primary.clean
    written = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("eval*.json")}
    again = evaluate_run(cfg, run_dir, data_root=None, device=torch.device("cpu"), quiet=True, dataset=digits)
    assert again.attacks == primary.attacks and again.flags == primary.flags
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.glob("eval*.json") if p.name != "eval_settings.json"} == \
        {k: v for k, v in written.items() if k != "eval_settings.json"}  # reused, not recomputed
    record = RunRecord("pgd_at", "main", cfg, run_dir, eval=primary, extra=extra)
    study = StudyConfig(name="t", base={}, runs=[{}])
    text = robustness(StudyContext(study, run_dir.parent, [record], torch.device("cpu")))
    assert "| AutoAttack | flags |" in text and "### AutoAttack beside the paper protocol" in text
    aa = extra["autoattack"].per_sample["autoattack"][:40]
    assert aa.mean() <= primary.robust(40).mean()
    assert "at most the paper protocol's worst case" in text


@pytest.mark.slow
def test_autoattack_is_never_above_the_paper_worst_case_on_the_digits_study(tmp_path):
    """The default study end to end: for every model evaluated by AutoAttack (the headline runs, on the whole
    test split) its robust accuracy is at most the paper protocol's per-sample worst case on the same points,
    and the report says so."""
    from pathlib import Path

    from robustlab.config import load_study, study_runs
    from robustlab.study import run_study

    config = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"
    report = run_study(config, out_root=tmp_path, quiet=True)
    checked = [label for label, _, cfg in study_runs(load_study(config)) if cfg.eval.extra_suites]
    assert checked == ["standard", "pgd_at", "trades", "alp"]
    for label in checked:
        run_dir = report.parent / label
        paper, aa = EvalResult.load(run_dir), EvalResult.load(run_dir, "eval_autoattack")
        assert aa.n == paper.n == 450
        assert aa.per_sample["autoattack"].mean() <= paper.robust(aa.n).mean(), label
    assert "For every model AutoAttack's robust accuracy is at most the paper protocol's worst case" in report.read_text()
