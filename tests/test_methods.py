import pytest
import torch
import torch.nn.functional as F

from robustlab import methods
from robustlab.errors import RobustlabError
from robustlab.methods import StepContext
from robustlab.methods.alp import logit_pairing


def _batch(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", ["standard", "pgd_at", "trades", "alp"])
def test_loss_is_finite_and_differentiable_and_attack_leaves_no_param_grads(tiny_cnn, name):
    x, y = _batch()
    m = methods.create(name, threat="linf:0.1", **({} if name == "standard" else {"attack_steps": 2}))
    tiny_cnn.train()
    loss, stats = m.loss(tiny_cnn, x, y, StepContext(generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(loss) and loss.requires_grad
    assert all(p.grad is None for p in tiny_cnn.parameters()), "the training attack must not write .grad"
    assert "loss" in stats and all(not v.requires_grad for v in stats.values())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tiny_cnn.parameters())
    assert tiny_cnn.training


def test_trades_with_beta_zero_is_clean_cross_entropy(tiny_cnn):
    x, y = _batch()
    tiny_cnn.train()
    loss, _ = methods.create("trades", threat="linf:0.1", beta=0.0, attack_steps=1).loss(tiny_cnn, x, y, StepContext())
    assert torch.allclose(loss, F.cross_entropy(tiny_cnn(x), y), atol=1e-6)


def test_logit_pairing_is_squared_l2_per_sample():
    a, b = torch.randn(4, 10), torch.randn(4, 10)
    assert torch.allclose(logit_pairing(a, b), ((a - b) ** 2).sum(1))
    assert torch.equal(logit_pairing(a, a), torch.zeros(4))


def test_pgd_at_trains_on_the_attack_examples(tiny_cnn, monkeypatch):
    x, y = _batch()
    m = methods.create("pgd_at", threat="linf:0.1", attack_steps=2)
    x_adv = m.train_attack(tiny_cnn, x, y, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(m, "adversarial", lambda model, xx, yy, ctx: x_adv)
    loss, _ = m.loss(tiny_cnn, x, y, StepContext())
    assert torch.allclose(loss, F.cross_entropy(tiny_cnn(x_adv), y))


def test_method_errors():
    with pytest.raises(RobustlabError, match="Known methods: .*pgd_at"):
        methods.create("pgd-at", threat="linf:0.1")
    with pytest.raises(RobustlabError, match="did you mean 'beta'"):
        methods.create("trades", threat="linf:0.1", betta=1.0)
    with pytest.raises(RobustlabError, match="needs a threat model"):
        methods.create("trades")
    with pytest.raises(RobustlabError, match="attack_start"):
        methods.create("pgd_at", threat="linf:0.1", attack_start="gaussian")
