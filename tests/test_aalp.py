"""AALP (Wu et al., arXiv 2005.11904): Guided Dropout, adaptive sample weighting, the variants, and the Table-3 options."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab import methods, models
from robustlab.errors import RobustlabError
from robustlab.methods import StepContext
from robustlab.methods.aalp import ground_truth_probability
from robustlab.methods.alp import logit_pairing
from robustlab.methods.guided_dropout import (contribution_scores, feature_gradient, guided_dropout_forward,
                                              guided_dropout_logits, guided_dropout_mask)

THREAT = "linf:0.2"




def small_model(name: str = "small_cnn", seed: int = 0, **kw):
    torch.manual_seed(seed)
    kw = kw or ({"width": 8, "hidden": 64} if name == "small_cnn" else {"width": 4})
    return models.create(name, 10, 1, 8, (0.5,), (0.25,), **kw)


def batch(n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def step_loss(method, model, x, y, seed: int = 3):
    return method.loss(model, x, y, StepContext(generator=torch.Generator().manual_seed(seed)))


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


# --- Guided Dropout (Eqs. 7–8) ------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 7, 8, 33, 128])
def test_mask_keeps_exactly_the_upper_half_of_distinct_scores(d):
    scores = torch.randperm(d).float() + torch.rand(d) * 0.5  # distinct
    mask = guided_dropout_mask(scores)
    k = math.ceil(d / 2)
    assert mask.sum() == k and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert set(torch.nonzero(mask).flatten().tolist()) == set(torch.topk(scores, k).indices.tolist())
    # Eq. 8 with the median as the middle value (odd d) or the mean of the two middle values (even d)
    assert torch.equal(mask.bool(), torch.from_numpy(scores.numpy() >= np.median(scores.numpy())))


def test_mask_ties_keep_lower_indices_and_still_exactly_half():
    scores = torch.tensor([0.0, 3.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # many tied zeros (dead units)
    mask = guided_dropout_mask(scores)
    assert mask.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert guided_dropout_mask(torch.zeros(6)).tolist() == [1, 1, 1, 0, 0, 0]


def test_contribution_scores_match_the_analytic_gradient_of_a_linear_head():
    model = small_model()
    a = torch.rand(9, 64) * 2
    y = torch.randint(0, 10, (9,))
    w = model.head.weight.detach()
    p = F.softmax(model.head(a), 1).detach()
    expected_grad = (p - F.one_hot(y, 10).float()) @ w  # ∂CE_i/∂A_i
    g = feature_gradient(model, a, y)
    torch.testing.assert_close(g, expected_grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(contribution_scores(a, g), (expected_grad * a).abs().mean(0), rtol=1e-5, atol=1e-6)
    assert all(q.grad is None for q in model.parameters())  # no parameter gradient accumulated


def test_guided_dropout_logits_apply_the_mask_in_training_and_nothing_in_eval():
    model = small_model().train()
    x, y = batch()
    a = torch.rand(12, 64) + 0.1  # every unit active, so the mask matters
    mask = guided_dropout_mask(contribution_scores(a, feature_gradient(model, a, y)))
    torch.testing.assert_close(guided_dropout_logits(model, a, y), model.forward_head(a * mask))
    assert not torch.allclose(guided_dropout_logits(model, a, y), model.forward_head(a))
    torch.testing.assert_close(guided_dropout_logits(model, a, y, rescale=True), model.forward_head(a * mask * 2))
    model.eval()
    torch.testing.assert_close(guided_dropout_logits(model, a, y), model.forward_head(a))
    torch.testing.assert_close(guided_dropout_forward(model, x, y), model(x))


def test_score_rows_restrict_R_to_the_first_rows():
    model = small_model().train()
    x, y = batch(10)
    a = model.forward_features(x)
    mask = guided_dropout_mask(contribution_scores(a[:4], feature_gradient(model, a[:4], y[:4])))
    torch.testing.assert_close(guided_dropout_logits(model, a, y, score_rows=4), model.forward_head(a * mask))


def test_guided_dropout_mask_is_recomputed_every_step():
    model = small_model().train()
    x1, y1 = batch(seed=1)
    x2, y2 = batch(seed=2)
    masks = []
    for x, y in ((x1, y1), (x2, y2)):
        a = model.forward_features(x)
        masks.append(guided_dropout_mask(contribution_scores(a, feature_gradient(model, a, y))))
    assert not torch.equal(masks[0], masks[1])


# --- the objective (Eqs. 1, 9, 10) and its variants ---------------------------------------------------

@pytest.mark.parametrize("arch", ["small_cnn", "resnet9"])  # resnet9: BatchNorm in train mode
def test_aalp_with_both_switches_off_equals_alp(arch):
    model = small_model(arch).train()
    x, y = batch()
    alp = methods.create("alp", threat=THREAT, lam=0.7, clean_weight=0.4, attack_steps=3)
    aalp = methods.create("aalp", threat=THREAT, alpha=0.7, clean_weight=0.4, attack_steps=3,
                          guided_dropout=False, sample_weighting=False)
    twin = copy.deepcopy(model)  # BatchNorm running statistics change with every training-mode forward
    l1, s1 = step_loss(alp, model, x, y)
    g1 = grads(model, l1)
    l2, s2 = step_loss(aalp, twin, x, y)
    g2 = grads(twin, l2)
    torch.testing.assert_close(l2, l1, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s2["alp"], s1["alp"])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def _manual_aalp(model, x, x_adv, y, alpha, detach: bool):
    lc, la = model(torch.cat([x, x_adv])).chunk(2)
    w = ground_truth_probability(lc.detach() if detach else lc, y)
    ce = 0.5 * F.cross_entropy(lc, y) + 0.5 * F.cross_entropy(la, y)
    return ce + alpha * (w * logit_pairing(lc, la)).mean()


def test_sample_weight_is_the_detached_clean_ground_truth_probability():
    model = small_model().train()
    x, y = batch()
    method = methods.create("aalp_sw", threat=THREAT, alpha=2.0, attack_steps=2)
    loss, stats = step_loss(method, model, x, y)
    g = grads(model, loss)
    x_adv = method.train_attack(model, x, y, generator=torch.Generator().manual_seed(3))
    expected = _manual_aalp(model, x, x_adv, y, 2.0, detach=True)
    torch.testing.assert_close(loss, expected)
    for a, b in zip(g, grads(model, expected)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # the same loss with a weight that carries gradient has different parameter gradients
    undetached = grads(model, _manual_aalp(model, x, x_adv, y, 2.0, detach=False))
    assert any(not torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g, undetached))
    assert 0 < float(stats["weight"]) < 1


def test_full_aalp_in_eval_mode_is_aalp_sw():
    model = small_model().eval()  # Guided Dropout is a training-time module
    x, y = batch()
    full, _ = step_loss(methods.create("aalp", threat=THREAT, attack_steps=2), model, x, y)
    sw, _ = step_loss(methods.create("aalp_sw", threat=THREAT, attack_steps=2), model, x, y)
    torch.testing.assert_close(full, sw)
    model.train()
    full_train, _ = step_loss(methods.create("aalp", threat=THREAT, attack_steps=2), model, x, y)
    assert not torch.allclose(full_train, sw)


def test_variants_fix_their_switches_and_reject_them_as_options():
    gd = methods.create("aalp_gd", threat=THREAT, alpha=0.3, gd_score="clean")
    sw = methods.create("aalp_sw", threat=THREAT)
    full = methods.create("aalp", threat=THREAT)
    assert (gd.guided_dropout, gd.sample_weighting, gd.alpha, gd.gd_score) == (True, False, 0.3, "clean")
    assert (sw.guided_dropout, sw.sample_weighting) == (False, True)
    assert (full.guided_dropout, full.sample_weighting, full.alpha) == (True, True, 1.0)
    assert gd.describe().startswith("aalp_gd:")
    with pytest.raises(RobustlabError, match="unknown option 'sample_weighting'"):
        methods.create("aalp_gd", threat=THREAT, sample_weighting=True)
    with pytest.raises(RobustlabError, match="unknown option 'gd_rescale'"):
        methods.create("aalp_sw", threat=THREAT, gd_rescale=True)
    with pytest.raises(RobustlabError, match="gd_score"):
        methods.create("aalp", threat=THREAT, gd_score="adv")


def test_aalp_trains_and_steps_change_the_model():
    model = small_model().train()
    x, y = batch(32)
    method = methods.create("aalp", threat=THREAT, attack_steps=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        loss, stats = step_loss(method, model, x, y)
        assert torch.isfinite(loss) and set(stats) >= {"loss", "ce", "alp", "aalp", "weight", "acc", "adv_acc"}
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# --- Guided Dropout in standard and PGD training (Table 3) ---------------------------------------------

@pytest.mark.parametrize("name", ["standard", "pgd_at"])
def test_guided_dropout_option_of_standard_and_pgd_at(name):
    model = small_model().train()
    x, y = batch()
    kw = {"attack_steps": 2} if name == "pgd_at" else {}
    plain, _ = step_loss(methods.create(name, threat=THREAT, **kw), model, x, y)
    gd, _ = step_loss(methods.create(name, threat=THREAT, guided_dropout=True, **kw), model, x, y)
    x_in = x if name == "standard" else methods.create(name, threat=THREAT, **kw).train_attack(
        model, x, y, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(plain, F.cross_entropy(model(x_in), y))  # the default is unchanged
    torch.testing.assert_close(gd, F.cross_entropy(guided_dropout_forward(model, x_in, y), y))
    assert not torch.allclose(plain, gd)
