"""APGD, FAB, Square and AutoAttack: analytic cases on linear models, budgets, contracts and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustlab import attacks
from robustlab.attacks.apgd import checkpoints
from robustlab.attacks.base import malt_targets
from robustlab.attacks.fab import project_hyperplane_box
from robustlab.attacks.square import p_schedule
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel


def exact_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel) -> np.ndarray:
    """Closed-form robustness of a linear classifier for points deep inside [0, 1] (the ball stays inside
    the box): robust iff for every j ≠ y, margin_j > eps·‖w_y − w_j‖_dual (l1 for linf, l2 for l2)."""
    w, b = model.weight.detach().double(), model.bias.detach().double()
    z = x.flatten(1).double() @ w.T + b
    v = w[y][:, None, :] - w[None, :, :]  # (N, K, d)
    margin = z.gather(1, y[:, None]) - z
    dual = v.abs().sum(2) if threat.norm == "linf" else v.norm(dim=2)
    worst = (margin - threat.eps * dual).scatter(1, y[:, None], float("inf")).amin(1)
    return ((z.argmax(1) == y) & (worst > 0)).numpy()


def linear_case(make, norm: str, num_classes: int, n: int = 60, seed: int = 0):
    """A linear model on 1×8×8 images (`make`: conftest's linear_model factory), interior points labelled
    by the model, and an eps that leaves about half robust, with points near the decision threshold
    (within 3% of eps) dropped so the answer is unambiguous."""
    model = make(num_classes=num_classes, dim=64, seed=seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = 0.35 + 0.3 * torch.rand(4 * n, 1, 8, 8, generator=g)
    with torch.no_grad():
        z = model(x).double()
    y = z.argmax(1)
    w = model.weight.detach().double()
    v = w[y][:, None, :] - w[None, :, :]
    dual = v.abs().sum(2) if norm == "linf" else v.norm(dim=2)
    dist = ((z.gather(1, y[:, None]) - z) / dual.clamp_min(1e-12)).scatter(1, y[:, None], float("inf")).amin(1)
    eps = float(dist.median())
    eps = min(eps, 0.3)
    keep = ((dist - eps).abs() > 0.03 * eps).nonzero().flatten()[:n]
    return model, x[keep], y[keep], ThreatModel(norm, eps)


# --- analytic cases ---------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_t_reaches_the_exact_worst_case_of_a_linear_multiclass_model(norm, linear_model):
    model, x, y, threat = linear_case(linear_model, norm, 10)
    exact = exact_robust(model, x, y, threat)
    assert 0.2 < exact.mean() < 0.8
    res = attacks.build("apgd-t", threat, num_classes=10).run(model, x, y)
    np.testing.assert_array_equal(~res.success.numpy(), exact)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_reaches_the_exact_worst_case_of_a_linear_binary_model(norm, linear_model):
    model, x, y, threat = linear_case(linear_model, norm, 2)
    exact = exact_robust(model, x, y, threat)
    assert 0.2 < exact.mean() < 0.8
    res = attacks.build("apgd-ce", threat).run(model, x, y)
    np.testing.assert_array_equal(~res.success.numpy(), exact)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_ce_on_a_multiclass_linear_model_is_sound_and_close(norm, linear_model):
    model, x, y, threat = linear_case(linear_model, norm, 10)
    exact = exact_robust(model, x, y, threat)
    res = attacks.build("apgd-ce", threat, num_classes=10).run(model, x, y)
    robust = ~res.success.numpy()
    assert not (exact & ~robust).any()  # never claims to break a provably robust point
    assert robust.mean() - exact.mean() <= 0.1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_and_autoattack_reach_the_exact_worst_case(norm, linear_model):
    model, x, y, threat = linear_case(linear_model, norm, 10)
    exact = exact_robust(model, x, y, threat)
    fab = attacks.build("fab-t", threat, num_classes=10).run(model, x, y)
    np.testing.assert_array_equal(~fab.success.numpy(), exact)
    aa = attacks.build({"name": "autoattack", "queries": 5000 if norm == "linf" else 500}, threat, num_classes=10).run(model, x, y)
    np.testing.assert_array_equal(~aa.success.numpy(), exact)
    # cumulative stages only ever lose points, and end at the final result
    stages = [s.numpy() for s in aa.stages.values()]
    assert list(aa.stages) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all((a >= b).all() for a, b in zip(stages, stages[1:]))
    np.testing.assert_array_equal(stages[-1], ~aa.success.numpy())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("spec", ["apgd-ce", "apgd-t", "fab", "fab-t", {"name": "square", "queries": 200},
                                  {"name": "autoattack", "queries": 500}])
def test_outputs_are_in_the_ball_and_box_and_successes_are_real(norm, spec, linear_model):
    model, x, y, threat = linear_case(linear_model, norm, 10, n=30)
    x = x.clone()
    x[:5] = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(3)).round()  # pixels at 0 and 1
    threat = ThreatModel(norm, threat.eps * (1.0 if norm == "linf" else 2.0))
    res = attacks.build(spec, threat, num_classes=10).run(model, x, y)
    assert res.x_adv.shape == x.shape
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert threat.contains(res.x_adv - x, atol=1e-5).all()
    with torch.no_grad():
        wrong = model(res.x_adv).argmax(1) != y
    assert (wrong[res.success]).all()


class Overshoot(nn.Module):
    """Ten classes along t = (mean(x) − 0.5)/eps: class 0 wins near t = 0 against nine close rivals (high
    cross-entropy), class 9 wins at t = 1 where the eight others have vanished (lower cross-entropy). APGD's
    first step (2ε, projected) lands at t = 1: misclassified, yet no better in loss, so the step is halved."""

    num_classes = 10

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        t = (x.flatten(1).mean(1) - 0.5) / self.eps
        rivals = (-0.5 - 9.5 * t ** 2)[:, None].expand(-1, 8)
        return torch.cat([torch.zeros_like(t)[:, None], rivals, (-0.5 + 0.7 * t)[:, None]], 1)


def test_apgd_returns_the_iterate_it_judged_broken_when_the_step_is_halved_at_that_iteration():
    assert 1 in checkpoints(4)  # the first iteration is a checkpoint
    eps = 0.05
    model, x, y = Overshoot(eps), torch.full((60, 1, 8, 8), 0.5), torch.zeros(60, dtype=torch.long)
    res = attacks.build({"name": "apgd-ce", "steps": 4}, f"linf:{eps}").run(model, x, y)
    assert int(res.success.sum()) >= 20  # about half the random starts lead to the overshoot
    with torch.no_grad():
        assert bool((model(res.x_adv).argmax(1) != y)[res.success].all())


def test_fab_lands_next_to_the_closest_boundary_of_a_linear_model(linear_model):
    # for a linear model FAB's linearisation is exact: its first step projects onto the closest boundary
    # (times the overshoot eta = 1.05), so the point it returns is at most 5% beyond the minimal distance
    model, x, y, threat = linear_case(linear_model, "linf", 10, n=20)
    w = model.weight.detach().double()
    z = model(x).detach().double()
    v = w[y][:, None, :] - w[None, :, :]
    dist = ((z.gather(1, y[:, None]) - z) / v.abs().sum(2)).scatter(1, y[:, None], float("inf")).amin(1)
    big = ThreatModel("linf", 0.3)
    res = attacks.build("fab", big, num_classes=10).run(model, x, y)
    found = (res.x_adv - x).flatten(1).abs().amax(1).double()
    ok = res.success & (dist < 0.3)
    assert ok.sum() >= 10
    assert (found[ok] >= dist[ok] - 1e-6).all() and (found[ok] <= 1.05 * dist[ok] + 1e-6).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_onto_hyperplane_and_box_matches_a_generic_solver(norm):
    from scipy.optimize import linprog, minimize

    g = torch.Generator().manual_seed(0)
    p = torch.rand(40, 6, generator=g, dtype=torch.float64)
    w = torch.randn(40, 6, generator=g, dtype=torch.float64)
    w[0, 2] = w[1, :3] = 0
    c = 0.8 * torch.randn(40, generator=g, dtype=torch.float64)
    delta = project_hyperplane_box(p, w, c, norm).numpy()
    feasible = 0
    for i in range(40):
        pi, wi = p[i].numpy(), w[i].numpy()
        r = -(wi @ pi) - c[i].item()
        lo, hi = -pi, 1 - pi
        reach = np.where(wi > 0, wi * hi, wi * lo).sum(), np.where(wi > 0, wi * lo, wi * hi).sum()
        if not reach[1] <= r <= reach[0]:  # the hyperplane misses the box: every coordinate at its face
            s = np.sign(r)
            np.testing.assert_allclose(delta[i], np.where(wi * s > 0, hi, np.where(wi * s < 0, lo, 0)))
            continue
        feasible += 1
        assert abs(wi @ delta[i] - r) < 1e-9
        assert (delta[i] >= lo - 1e-12).all() and (delta[i] <= hi + 1e-12).all()
        if norm == "linf":  # min t s.t. -t <= δ <= t, w·δ = r, box
            a_ub = np.r_[np.c_[np.eye(6), -np.ones(6)], np.c_[-np.eye(6), -np.ones(6)]]
            lp = linprog(np.r_[np.zeros(6), 1], A_ub=a_ub, b_ub=np.zeros(12), A_eq=np.r_[wi, 0][None], b_eq=[r],
                         bounds=list(zip(lo, hi)) + [(0, None)])
            assert abs(np.abs(delta[i]).max() - lp.x[-1]) < 1e-7
        else:
            qp = minimize(lambda d: d @ d, np.zeros(6), jac=lambda d: 2 * d, method="SLSQP", bounds=list(zip(lo, hi)),
                          constraints=[{"type": "eq", "fun": lambda d: wi @ d - r, "jac": lambda d: wi}],
                          options={"ftol": 1e-15, "maxiter": 500})
            assert abs(np.linalg.norm(delta[i]) - np.linalg.norm(qp.x)) < 1e-5
    assert feasible >= 20


# --- schedules and budgets ------------------------------------------------------------------------------

def test_apgd_checkpoints_follow_the_paper():
    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_square_p_schedule():
    assert p_schedule(0.8, 10, 5000, False) == 0.8
    assert p_schedule(0.8, 11, 5000, False) == 0.4
    assert p_schedule(0.8, 4000, 5000, False) == pytest.approx(0.8 / 64)
    assert p_schedule(0.8, 4999, 5000, False) == pytest.approx(0.8 / 128)
    assert p_schedule(0.8, 4999, 5000, True) == pytest.approx(0.8 / 512)


class Counting(nn.Module):
    """Counts forward passes and images seen."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls, self.images = inner, 0, 0
        self.num_classes = inner.num_classes

    def forward(self, x):
        self.calls += 1
        self.images += x.shape[0]
        return self.inner(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_spends_exactly_its_budget_on_an_unbreakable_point_and_never_more(norm, linear_model):
    model = linear_model(num_classes=10, dim=64, seed=4)
    with torch.no_grad():
        model.weight.mul_(1e-3)  # logits dominated by the bias: no point within eps can change class
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    counted = Counting(model)
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 1.0)
    res = attacks.build({"name": "square", "queries": 150}, threat, num_classes=10).run(counted, x, y)
    assert not res.success.any()
    assert counted.calls == 150 and counted.images == 5 * 150
    assert threat.contains(res.x_adv - x, atol=1e-6).all() and res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_square_stops_querying_broken_points(linear_model):
    model, x, y, threat = linear_case(linear_model, "linf", 10, n=20)
    counted = Counting(model)
    res = attacks.build({"name": "square", "queries": 300}, threat, num_classes=10).run(counted, x, y)
    assert res.success.any()
    assert counted.images <= 300 * len(x) - int(res.success.sum())  # broken points left before the budget ran out


# --- contracts ---------------------------------------------------------------------------------------

class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.num_classes = 10
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("spec", ["apgd-ce", "apgd-t", "fab", "fab-t", {"name": "square", "queries": 30},
                                  {"name": "autoattack", "steps": 5, "queries": 30}])
def test_model_state_is_untouched(spec):
    torch.manual_seed(0)
    model = BNNet()
    model.train()
    model(torch.rand(8, 1, 8, 8))  # non-trivial BN statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    attacks.build(spec, "linf:0.1", num_classes=10, mode="train").run(model, x, y)
    attacks.build(spec, "linf:0.1", num_classes=10)(model, x, y)
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("spec", ["apgd-ce", {"name": "fab", "restarts": 2, "steps": 10}, {"name": "square", "queries": 100},
                                  {"name": "autoattack", "steps": 10, "queries": 100}])
def test_deterministic_under_the_seed(spec, linear_model):
    model, x, y, threat = linear_case(linear_model, "linf", 10, n=20)
    threat = ThreatModel("linf", threat.eps * 0.8)
    a = attacks.build(spec, threat, num_classes=10, seed=3).run(model, x, y)
    b = attacks.build(spec, threat, num_classes=10, seed=3).run(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    gen = torch.Generator().manual_seed(11)
    c = attacks.build(spec, threat, num_classes=10).run(model, x, y, generator=gen)
    d = attacks.build(spec, threat, num_classes=10).run(model, x, y, generator=torch.Generator().manual_seed(11))
    assert torch.equal(c.x_adv, d.x_adv)


# --- bad input -----------------------------------------------------------------------------------------

def test_errors_name_the_bad_value(linear_model):
    model, x, y, _ = linear_case(linear_model, "linf", 10, n=4)
    with pytest.raises(RobustlabError, match="l1"):
        attacks.build("apgd-ce", "l1:10")
    for spec in ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack"):
        with pytest.raises(RobustlabError, match="eps=0"):
            attacks.build(spec, "linf:0")
    with pytest.raises(RobustlabError, match="n_target_classes=9.*5"):
        attacks.build("apgd-t", "linf:0.1", num_classes=5)
    with pytest.raises(RobustlabError, match="n_target_classes=9.*5"):
        attacks.build("fab-t", "linf:0.1").run(linear_model(5, 64), x, y % 5)
    with pytest.raises(RobustlabError, match=r"\(4, 10\).*\(4, 5\)"):
        attacks.build("apgd-ce", "linf:0.1", num_classes=10).run(linear_model(5, 64), x, y % 5)
    with pytest.raises(RobustlabError, match="at least 3 classes"):
        attacks.build("apgd-dlr", "linf:0.1").run(linear_model(2, 64), x, y % 2)
    with pytest.raises(RobustlabError, match="plain"):
        attacks.build({"name": "autoattack", "version": "plain"}, "linf:0.1")
    with pytest.raises(RobustlabError, match="custom"):
        attacks.build({"name": "autoattack", "version": "custom"}, "linf:0.1")
    custom = attacks.build({"name": "autoattack", "version": "custom", "attacks": ["apgd-ce", {"name": "square", "queries": 20}]},
                           "linf:0.1", num_classes=10)
    assert [label for label, _ in custom.components] == ["apgd-ce", "square"]


# --- batched runs ---------------------------------------------------------------------------------------

def far_runner_up(make, n: int = 60):
    """A linear 10-class model (`make`: conftest's linear_model factory) whose runner-up class (by logit) has a
    far decision boundary, its other classes close ones, and points of class 0: the first target by logit
    breaks none of them, later targets most."""
    g = torch.Generator().manual_seed(0)
    model = make(10, 64).eval()
    w = model.weight.data
    w[0], w[1] = 0.0, 0.05 * w[1]
    b = torch.cat([torch.tensor([0.0, -0.2]), -1.0 - torch.rand(8, generator=g)])
    model.bias.data = b - 0.5 * w.sum(1)  # logits centred on the grey image
    x = 0.35 + 0.3 * torch.rand(2 * n, 1, 8, 8, generator=g)
    with torch.no_grad():
        x = x[model(x).argmax(1) == 0][:n]
    return model, x, torch.zeros(len(x), dtype=torch.long)


@pytest.mark.parametrize("spec, one_run, case", [
    ({"name": "apgd-t", "steps": 10}, {"n_target_classes": 1}, "far_runner_up"),
    ({"name": "fab-t", "steps": 10}, {"n_target_classes": 1}, "far_runner_up"),
    ({"name": "apgd-ce", "steps": 4, "restarts": 3}, {"restarts": 1}, "overshoot"),
])
def test_runs_in_one_batched_pass_break_exactly_the_points_that_runs_one_after_the_other_break(spec, one_run, case, linear_model):
    """All targets (restarts) as one batch of rows, and one run after the other (the reference implementation's
    order): with the same seed the same points are broken, and each batched example is a real one."""
    if case == "overshoot":  # half the random starts break a point
        model, x, y, threat = Overshoot(0.05), torch.full((60, 1, 8, 8), 0.5), torch.zeros(60, dtype=torch.long), "linf:0.05"
    else:
        (model, x, y), threat = far_runner_up(linear_model), "linf:0.01"
    batched = attacks.build(spec, threat, num_classes=10, seed=1).run(model, x, y)
    sequential = attacks.build({**spec, "runs_per_pass": 1}, threat, num_classes=10, seed=1).run(model, x, y)
    first = attacks.build({**spec, **one_run}, threat, num_classes=10, seed=1).run(model, x, y)
    assert int(batched.success.sum()) >= int(first.success.sum()) + 10  # the later runs break points of their own
    assert torch.equal(batched.success, sequential.success)
    with torch.no_grad():
        assert bool((model(batched.x_adv).argmax(1) != y)[batched.success].all())
    assert bool(ThreatModel.parse(threat).contains(batched.x_adv - x, atol=1e-6).all())


# --- MALT targeting and the fast suite ------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_malt_ranks_targets_by_the_exact_boundary_distance_of_a_linear_model(norm, linear_model):
    model, x, y, threat = linear_case(linear_model, norm, 10)
    w, b = model.weight.detach().double(), model.bias.detach().double()
    z = x.flatten(1).double() @ w.T + b
    v = w[y][:, None, :] - w[None, :, :]
    dual = v.abs().sum(2) if norm == "linf" else v.norm(dim=2)
    exact = ((z.gather(1, y[:, None]) - z) / dual).scatter(1, y[:, None], float("inf"))
    with torch.no_grad():
        logits = model(x)
    targets = malt_targets(model, x, y, logits, 3, norm)
    np.testing.assert_array_equal(targets.numpy(), exact.topk(3, dim=1, largest=False).indices.numpy())


def test_malt_finds_the_close_boundary_that_the_largest_logit_hides(linear_model):
    model, x, y = far_runner_up(linear_model)
    def apgd_t(k: int, targeting: str) -> torch.Tensor:
        spec = {"name": "apgd-t", "n_target_classes": k, "targeting": targeting}
        return attacks.build(spec, "linf:0.01", num_classes=10).run(model, x, y).success
    all_targets, first_by_logit, first_by_malt = apgd_t(9, "logits"), apgd_t(1, "logits"), apgd_t(1, "malt")
    assert int(first_by_logit.sum()) < int(all_targets.sum()) / 3
    assert torch.equal(first_by_malt, all_targets)  # MALT's first target is the one that breaks each point
