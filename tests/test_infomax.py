"""MI bounds, estimators and worst-case MI (Zhu et al., arXiv 2002.11798) on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab import data, models
from robustlab.analysis.mi import fit_and_estimate, measure_vulnerability, robust_accuracy_bound
from robustlab.attacks.base import model_untouched
from robustlab.errors import RobustlabError
from robustlab.infomax import MIEstimator, dv_bound, infonce_bound, jsd_bound, make_critic, minimise_mi
from robustlab.threat import ThreatModel

BATCH = 128
# Tolerance of a trained estimate against the true MI of correlated Gaussians (nats): after 250 critic steps
# at batch 128 the DV, JSD-trained and moving-average estimates land 0.03–0.08 below the truth (MI far below
# log 128, where they behave as lower bounds; finite training), and the test estimate (10 batches of 128)
# has a standard error of ≈0.04 at ρ = 0.8; 0.15 leaves room for both while still failing for a wrong bound
# or critic. With MI above log N, DV overshoots instead (docs/mutual_information.md).
TOL = 0.15


def true_mi(rho: float, dims: int) -> float:
    """I(X; Z) = −½ Σᵢ log(1 − ρᵢ²) for X ~ N(0, I), Z = ρX + √(1−ρ²)·ε."""
    return -0.5 * dims * math.log(1 - rho**2)


def gaussian_estimate(rho: float, bound: str, *, dims: int = 2, ma_rate: float | None = None, steps: int = 250) -> float:
    """Fit a concat critic on (x, z) pairs of correlated Gaussians; return its test estimate (nats)."""
    g = torch.Generator().manual_seed(1)
    noise = math.sqrt(1 - rho**2)

    def channel(x: torch.Tensor) -> torch.Tensor:  # a stochastic "encoder": fresh noise on every call
        return rho * x + noise * torch.randn(x.shape, generator=g)

    torch.manual_seed(0)
    estimator = MIEstimator(make_critic("concat", (dims,), dims, hidden=64), bound, "exact", ma_rate)
    train_x = torch.randn(steps * BATCH, dims, generator=g)
    test_x = torch.randn(10 * BATCH, dims, generator=g)
    return fit_and_estimate(channel, train_x, test_x, estimator, epochs=1, batch_size=BATCH, lr=2e-3)["mi"]


@pytest.fixture(scope="module")
def dv_estimates() -> dict[float, float]:
    return {rho: gaussian_estimate(rho, "dv") for rho in (0.2, 0.5, 0.8)}


# --- the bounds on explicit score matrices ---------------------------------------------------------

def _scores(n: int = 6, locations: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, n, locations, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_dv_variants_match_their_formulas():
    u = _scores()
    n = u.shape[0]
    for l in range(u.shape[2]):
        pos = sum(u[i, i, l] for i in range(n)) / n
        off = [u[i, j, l].item() for i in range(n) for j in range(n) if i != j]
        exact = float(pos) - math.log(sum(math.exp(v) for v in off) / (n * (n - 1)))
        code = float(pos) - math.log((sum(math.exp(v) for v in off) + n) / (n * (n - 1)))  # diagonal e^0 = 1 terms
        assert dv_bound(u[:, :, l:l + 1], "exact").item() == pytest.approx(exact, rel=1e-9)
        assert dv_bound(u[:, :, l:l + 1], "code").item() == pytest.approx(code, rel=1e-9)
    # the code's extra e^0 terms only make the negative term larger: the code variant is never above exact
    assert dv_bound(u, "code") < dv_bound(u, "exact")


def test_jsd_and_infonce_match_their_formulas():
    u = _scores(n=5, locations=1)[:, :, 0]
    n = u.shape[0]
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    pos = sum(math.log(2) - sp(-u[i, i].item()) for i in range(n)) / n
    neg = sum(sp(u[i, j].item()) - math.log(2) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    assert jsd_bound(u[:, :, None]).item() == pytest.approx(pos - neg, rel=1e-9)
    nce = math.log(n) + sum(u[i, i].item() - math.log(sum(math.exp(u[i, j].item()) for j in range(n))) for i in range(n)) / n
    assert infonce_bound(u[:, :, None]).item() == pytest.approx(nce, rel=1e-9)


def test_infonce_never_above_log_batch_size():
    for seed in range(5):
        u = _scores(n=8, seed=seed)
        u = u + 50 * torch.eye(8, dtype=u.dtype)[:, :, None]  # a perfect critic saturates at log N, never beyond
        assert infonce_bound(u).item() <= math.log(8) + 1e-12
    assert infonce_bound(u).item() == pytest.approx(math.log(8), abs=1e-6)


def test_estimator_rejects_bad_options():
    critic = make_critic("concat", (2,), 2, hidden=8)
    with pytest.raises(RobustlabError, match="bound 'mine'"):
        MIEstimator(critic, "mine")  # type: ignore[arg-type]
    with pytest.raises(RobustlabError, match="ma_rate"):
        MIEstimator(critic, "jsd", ma_rate=0.01)
    with pytest.raises(RobustlabError, match="hiden"):
        make_critic("concat", (2,), 2, hiden=8)
    with pytest.raises(RobustlabError, match="C×H×W"):
        make_critic("local_global", (2,), 2)


# --- trained estimators on correlated Gaussians (known MI) ----------------------------------------

def test_dv_estimates_the_true_mi(dv_estimates):
    for rho in (0.5, 0.8):
        assert dv_estimates[rho] == pytest.approx(true_mi(rho, 2), abs=TOL), rho


def test_estimates_increase_with_correlation(dv_estimates):
    values = [dv_estimates[rho] for rho in (0.2, 0.5, 0.8)]
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_jsd_trained_critic_estimates_the_true_mi(rho):
    # the DV bound evaluated on a JSD-trained critic (T* = log p(x,z) / p(x)p(z) is optimal for both)
    assert gaussian_estimate(rho, "jsd") == pytest.approx(true_mi(rho, 2), abs=TOL)


def test_dv_with_moving_average_estimates_the_true_mi():
    assert gaussian_estimate(0.8, "dv", ma_rate=0.01) == pytest.approx(true_mi(0.8, 2), abs=TOL)


def test_infonce_saturates_below_log_batch_size():
    # true MI 5.87 nats > log 128 = 4.85: InfoNCE cannot follow it
    rho, dims = 0.99, 3
    estimate = gaussian_estimate(rho, "infonce", dims=dims, steps=150)
    assert true_mi(rho, dims) > math.log(BATCH)
    assert estimate <= math.log(BATCH)
    assert estimate > 3.0  # but it is not stuck at zero either


# --- worst-case MI ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_and_model():
    # a random one-hidden-layer ReLU net keeps enough of the image for a small critic to find ~1.5 nats
    ds = data.load("digits")
    torch.manual_seed(0)
    return ds, models.for_dataset("mlp", ds, hidden=(64,)).eval()


def small_critic(z_dim: int = 64) -> MIEstimator:
    torch.manual_seed(0)
    return MIEstimator(make_critic("local_global", (1, 8, 8), z_dim, hidden=32, width=(8, 16)))


def test_minimise_mi_keeps_the_best_iterate_and_the_threat_ball(digits_and_model):
    ds, model = digits_and_model
    estimator = small_critic()
    threat = ThreatModel.parse("linf:0.2")
    x = ds.train.x[:64]
    with model_untouched(model):
        fit_and_estimate(model.forward_features, ds.train.x, ds.test.x[:64], estimator, epochs=2, batch_size=64, lr=3e-3)
        before = {k: v.clone() for k, v in estimator.state_dict().items()}
        estimator.train()
        with torch.no_grad():
            clean = estimator.eval()(x, model.forward_features(x)).objective.item()
        estimator.train()
        x_adv, value = minimise_mi(model.forward_features, estimator, x, threat, steps=5, step=0.05)
        with torch.no_grad():
            again = estimator.eval()(x_adv, model.forward_features(x_adv)).objective.item()
        # one step only: keep-best may return the start, never anything worse than it
        _, one = minimise_mi(model.forward_features, estimator, x, ThreatModel.parse("linf:0.001"), steps=1, step=1e-3)
    assert clean > 0.5  # the critic has learnt something
    assert value < clean - 0.3  # the attack lowers its estimate a lot
    assert one <= clean + 1e-6  # keep-best includes the clean start
    assert again == pytest.approx(value, abs=1e-4)
    assert threat.contains(x_adv - x).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    torch.testing.assert_close(estimator.state_dict(), before, rtol=0, atol=0, equal_nan=True)  # critic untouched


def test_worst_case_mi_below_normal_and_rv_nonnegative(digits_and_model):
    ds, model = digits_and_model
    res = measure_vulnerability(model, ds.train.x, ds.test.x[:128], ThreatModel.parse("linf:0.2"), 10, seeds=2,
                                epochs=4, batch_size=64, lr=3e-3, attack_steps=3, critic_options={"hidden": 32, "width": (8, 16)},
                                mean=ds.mean, std=ds.std, quiet=True)
    normal, worst = res["normal_mi"]["values"], res["worst_mi"]["values"]
    assert min(normal) > 0.5
    # the same critic budget: every worst-case estimate is below every normal-case one
    assert max(worst) < min(normal)
    # RV >= 0 up to estimator noise (the spread over seeds); here it is clearly positive
    noise = max(res["normal_mi"]["std"], res["worst_mi"]["std"])
    assert min(res["rv"]["values"]) > noise
    assert 0 < res["robust_accuracy_bound"]["mean"] <= 1
    assert res["settings"]["n_train"] == len(ds.train) and res["layer"] == "features"


def test_robust_accuracy_bound():
    assert robust_accuracy_bound(0.0, 10) == pytest.approx(math.log(2) / math.log(10))
    # the paper's ~75% for ResNet-18's logit layer on CIFAR-10 ([Zhu20]) <=> I_eps ≈ 0.75 ln 10 − ln 2
    assert robust_accuracy_bound(0.75 * math.log(10) - math.log(2), 10) == pytest.approx(0.75)
    assert robust_accuracy_bound(10.0, 10) == 1.0
    # MI is never negative: an estimate below 0 (estimator noise) gives the bound at MI = 0, log 2 / log K
    assert robust_accuracy_bound(-0.053, 10) == pytest.approx(math.log(2) / math.log(10))
    assert robust_accuracy_bound(-5.0, 2) == pytest.approx(1.0)
