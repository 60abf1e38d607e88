"""Exact input-Fisher norms from K×K matrices against the explicit n×n matrix, and the Fisher attack."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustlab import attacks, models
from robustlab.analysis.fisher import fisher_attack_check, fisher_norms
from robustlab.attacks.fisher import input_fisher
from robustlab.errors import RobustlabError

K = 10
ARCHS = [("mlp", {"hidden": (32,)}), ("small_cnn", {"width": 4, "hidden": 16}),
         ("vgg13", {"width": 0.125}), ("resnet20", {"width": 1})]


def _model(name, kw, seed=0, scale=1.0):
    """A float64 model in eval mode with non-trivial BatchNorm statistics and logits scaled by `scale`."""
    torch.manual_seed(seed)
    m = models.create(name, K, 1, 8, **kw).double()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
        m.head.weight.mul_(scale)
    return m.eval().requires_grad_(False)


def explicit_fisher(model, x):
    """F = Jᵀ(diag p − ppᵀ)J built from the full n-column Jacobian of one sample (n×n)."""
    f = lambda v: model(v.view(1, *x.shape)).squeeze(0)  # noqa: E731
    jac = torch.autograd.functional.jacobian(f, x.flatten())  # K×n
    p = F.softmax(f(x.flatten()), 0)
    return jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac


@pytest.mark.parametrize("name,kw", ARCHS, ids=[a for a, _ in ARCHS])
def test_kxk_norms_match_explicit_fisher(name, kw):
    model = _model(name, kw, scale=4.0)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fi = input_fisher(model, x)
    for i in range(x.shape[0]):
        fm = explicit_fisher(model, x[i])
        evals, evecs = torch.linalg.eigh(fm)
        rel = lambda a, b: abs(float(a) / float(b) - 1)  # noqa: E731
        assert rel(fi.trace[i], torch.trace(fm)) < 1e-6
        assert rel(fi.frobenius[i], torch.linalg.matrix_norm(fm)) < 1e-6
        assert rel(fi.spectral[i], evals[-1]) < 1e-6
        assert abs(float(evecs[:, -1] @ fi.direction[i].flatten())) > 1 - 1e-6  # the same eigenvector up to sign
        # rank(F) ≤ K − 1: A = diag p − ppᵀ annihilates the all-ones vector
        assert int(torch.linalg.matrix_rank(fm, hermitian=True, rtol=1e-10)) <= K - 1


def test_rank_is_exactly_k_minus_one_for_a_generic_model():
    model = _model("mlp", {"hidden": (32,)})
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    assert int(torch.linalg.matrix_rank(explicit_fisher(model, x[0]), hermitian=True, rtol=1e-10)) == K - 1
    assert int(fisher_norms(model, x)["rank"].max()) == K - 1


def test_kl_over_quadratic_form_tends_to_one_for_linear_logits():
    model = _model("mlp", {"hidden": ()}, scale=3.0)  # logits = W·x + b
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    fm = explicit_fisher(model, x[0])
    d = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    clean = F.log_softmax(model(x), 1)
    errors = []
    for r in (1e-1, 1e-2, 1e-3):
        delta = r * d / d.norm()
        kl = F.kl_div(F.log_softmax(model(x + delta.view_as(x)), 1), clean, log_target=True, reduction="sum")
        errors.append(abs(float(kl / (0.5 * delta @ fm @ delta)) - 1))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2


def test_fisher_attack_beats_random_directions_and_matches_half_eps_squared_lambda():
    model = _model("small_cnn", {"width": 4, "hidden": 16}, scale=4.0).float()
    g = torch.Generator().manual_seed(3)
    x = 0.3 + 0.4 * torch.rand(16, 1, 8, 8, generator=g)  # interior points: clipping does not act
    y = torch.randint(0, K, (16,), generator=g)
    eps = 0.002  # small enough that no ReLU changes state along ±u for these samples
    attack = attacks.build("fisher", f"l2:{eps}")
    before = [p.clone() for p in model.parameters()]
    res = attack.run(model, x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert float((res.x_adv - x).flatten(1).norm(dim=1).max()) <= eps + 1e-5
    clean = F.log_softmax(model(x).double(), 1)
    kl = lambda xa: F.kl_div(F.log_softmax(model(xa).double(), 1), clean, log_target=True, reduction="none").sum(1)  # noqa: E731
    kl_fisher = kl(res.x_adv)
    lam = input_fisher(model, x, direction=False).spectral
    assert torch.allclose(kl_fisher / (0.5 * eps ** 2 * lam), torch.ones(16, dtype=torch.float64), rtol=0.01)
    for _ in range(5):
        d = torch.randn(x.shape, generator=g)
        d = eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        assert bool((kl_fisher >= torch.maximum(kl(x + d), kl(x - d))).all())
    # the analysis reports the same comparison
    row = fisher_attack_check(model, x, y, [eps])[0]
    assert row["fisher_ge_random"] == 1.0 and 0.99 < row["taylor_ratio_median"] < 1.01


def test_fisher_attack_is_l2_only():
    with pytest.raises(RobustlabError, match="l2"):
        attacks.build("fisher", "linf:8/255")


def test_per_sample_fisher_ignores_the_batch_and_leaves_a_train_mode_model_alone():
    """A BatchNorm model handed over in train mode: each sample's Fisher is computed as in eval mode (the
    same alone or in a batch), and the train flag and the BatchNorm buffers are as they were."""
    model = _model("resnet20", {"width": 1}, scale=4.0).train()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    batch = input_fisher(model, x)
    alone = input_fisher(model, x[:1])
    assert torch.allclose(batch.eigenvalues[0], alone.eigenvalues[0], rtol=1e-9, atol=1e-12)
    assert torch.allclose(batch.logits[0], alone.logits[0], rtol=1e-9)
    assert torch.allclose(batch.direction[0], alone.direction[0], atol=1e-9)
    assert model.training
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())


def test_fisher_summary_median_is_the_middle_of_an_even_count():
    from robustlab.analysis.fisher import summarize

    assert summarize(torch.tensor([4.0, 1.0, 3.0, 2.0]))["median"] == 2.5
    assert summarize(torch.tensor([5.0, 1.0, 3.0]))["median"] == 3.0
