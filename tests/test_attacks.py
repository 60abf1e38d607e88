"""Attacks: ball and box constraints, analytic worst cases, monotonicity, the model-untouched contract."""

import pytest
import torch

from robustlab import attacks, models
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel

SPECS = ["fgsm", "pgd-10", "cw-10", {"name": "pgd", "steps": 5, "restarts": 2, "random_start": "normal"},
         {"name": "pgd", "steps": 5, "loss": "kl", "random_start": "normal"}]


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[: n // 4] = x[: n // 4].round()  # many pixels exactly at 0 or 1: the box constraint is active
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("threat", ["linf:0.1", "l2:0.7"])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_stays_in_ball_and_box(tiny_cnn, threat, spec):
    x, y = _batch()
    t = ThreatModel.parse(threat)
    res = attacks.build(spec, t).run(tiny_cnn, x, y)
    assert res.x_adv.shape == x.shape and res.success.shape == (x.shape[0],)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert bool(t.contains(res.x_adv - x, atol=1e-6).all())
    # reported success agrees with the model's prediction on the returned points
    with torch.no_grad():
        assert torch.equal(res.success, tiny_cnn(res.x_adv).argmax(1) != y)


def test_linf_pgd_finds_the_analytic_worst_case_of_a_linear_model(linear_model):
    model = linear_model(num_classes=2, dim=16)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 4, 4, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    eps = 0.1
    # two classes: CE is monotone in the margin (w_y − w_other)·x, minimised coordinate-wise at the box-clipped vertex
    w = model.weight.detach()
    v = (w[y] - w[1 - y]).view_as(x)
    expected = (x - eps * v.sign()).clamp(0, 1)
    x_adv = attacks.build({"name": "pgd", "steps": 8, "random_start": "none"}, f"linf:{eps}")(model, x, y)
    assert torch.allclose(x_adv, expected, atol=1e-6)


def test_l2_pgd_finds_the_analytic_worst_case_of_a_linear_model(linear_model):
    model = linear_model(num_classes=2, dim=16, seed=3)
    g = torch.Generator().manual_seed(2)
    x = 0.4 + 0.2 * torch.rand(32, 1, 4, 4, generator=g)  # interior: the box stays inactive for eps = 0.05
    y = torch.randint(0, 2, (32,), generator=g)
    eps = 0.05
    w = model.weight.detach()
    v = (w[y] - w[1 - y]).view(32, -1)
    expected = x - eps * (v / v.norm(dim=1, keepdim=True)).view_as(x)
    x_adv = attacks.build({"name": "pgd", "steps": 20, "step": 0.01, "random_start": "none"}, f"l2:{eps}")(model, x, y)
    assert torch.allclose(x_adv, expected, atol=1e-5)


def test_cw_margin_on_linear_model_reaches_vertex(linear_model):
    model = linear_model(num_classes=2, dim=16, seed=5)
    x = torch.full((8, 1, 4, 4), 0.5)
    y = torch.tensor([0, 1] * 4)
    w = model.weight.detach()
    v = (w[y] - w[1 - y]).view_as(x)
    x_adv = attacks.build({"name": "cw", "steps": 10, "random_start": "none"}, "linf:0.2")(model, x, y)
    assert torch.allclose(x_adv, x - 0.2 * v.sign(), atol=1e-6)


def test_more_steps_or_restarts_never_weaker_on_the_same_seed(tiny_cnn):
    x, y = _batch(128, seed=4)
    t = "linf:0.03"
    base = attacks.build("pgd-3", t, seed=7).run(tiny_cnn, x, y).success
    longer = attacks.build("pgd-9", t, seed=7).run(tiny_cnn, x, y).success
    more = attacks.build({"name": "pgd", "steps": 3, "restarts": 4}, t, seed=7).run(tiny_cnn, x, y).success
    assert 0 < int(base.sum()) < 128  # the test is informative: the attack is neither trivial nor hopeless
    assert bool((longer | ~base).all()), "a point broken in 3 steps survived 9"
    assert bool((more | ~base).all()), "a point broken by 1 restart survived 4"


def test_deterministic_under_seed(tiny_cnn):
    x, y = _batch()
    a = attacks.build("pgd-5", "linf:0.1", seed=3)(tiny_cnn, x, y)
    b = attacks.build("pgd-5", "linf:0.1", seed=3)(tiny_cnn, x, y)
    c = attacks.build("pgd-5", "linf:0.1", seed=4)(tiny_cnn, x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("was_training", [True, False])
def test_model_state_identical_after_attack(mode, was_training):
    torch.manual_seed(0)
    model = models.create("resnet20", 10, 1, 8)  # has BatchNorm running statistics
    model.train(was_training)
    x, y = _batch(16)
    model(x).sum().backward()  # some existing .grad the attack must not touch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    attacks.build("pgd-3", "linf:0.1", mode=mode).run(model, x, y)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training == was_training


def test_targeted_mode_moves_towards_the_target(linear_model):
    model = linear_model(num_classes=5, dim=16, seed=2)
    x = torch.full((20, 1, 4, 4), 0.5)
    target = torch.arange(20) % 5
    for spec in ({"name": "pgd", "targeted": True, "steps": 20}, {"name": "cw", "targeted": True, "steps": 20}):
        res = attacks.build(spec, "linf:0.5").run(model, x, target)
        assert bool((res.success == (model(res.x_adv).argmax(1) == target)).all())
        assert res.success.float().mean() > 0.9  # eps 0.5 around 0.5 reaches any vertex: targets are reachable


def test_trades_kl_attack_increases_kl(tiny_cnn):
    import torch.nn.functional as F

    x, y = _batch()
    tiny_cnn.eval()
    start = attacks.build({"name": "pgd", "loss": "kl", "random_start": "normal", "steps": 1, "step": 1e-9}, "linf:0.1")(tiny_cnn, x, y)
    x_adv = attacks.build({"name": "pgd", "loss": "kl", "random_start": "normal", "steps": 10}, "linf:0.1")(tiny_cnn, x, y)

    def kl(z):
        with torch.no_grad():
            p = F.log_softmax(tiny_cnn(x), 1)
            return F.kl_div(F.log_softmax(tiny_cnn(z), 1), p, reduction="none", log_target=True).sum(1)

    assert bool((kl(x_adv) >= kl(start)).all())
    assert float(kl(x_adv).mean()) > 100 * float(kl(start).mean())


@pytest.mark.parametrize("bad,needle", [
    (lambda x, y: (x * 2, y), "[0, 1]"),
    (lambda x, y: (x[:, :, :4], y), "shape"),
    (lambda x, y: (x, y + 10), "out of range"),
    (lambda x, y: (x, y.float()), "integer"),
    (lambda x, y: (x[0], y), "4-d"),
])
def test_bad_inputs_get_clear_errors(tiny_cnn, bad, needle):
    x, y = _batch(8)
    xb, yb = bad(x, y)
    with pytest.raises(RobustlabError) as e:
        attacks.build("pgd-2", "linf:0.1")(tiny_cnn, xb, yb)
    assert needle in str(e.value)


def test_bad_attack_specs():
    with pytest.raises(RobustlabError, match="Did you mean 'pgd-10'.*Known families"):
        attacks.build("pgdd-10", "linf:0.1")
    with pytest.raises(RobustlabError, match="did you mean 'steps'"):
        attacks.build({"name": "pgd", "stpes": 3}, "linf:0.1")
    with pytest.raises(RobustlabError, match="eps"):
        attacks.build("pgd-3", "linf:0")
    with pytest.raises(RobustlabError, match="logits"):
        x, y = _batch(4)
        attacks.build("pgd-2", "linf:0.1", num_classes=3)(models.create("mlp", 10, 1, 8), x, y % 3)


def test_train_mode_attack_after_a_clean_forward_keeps_backward_working():
    """A method may forward clean inputs, then attack in train mode, then backpropagate both."""
    torch.manual_seed(0)
    model = models.create("resnet20", 10, 1, 8).train()
    x, y = _batch(16)
    clean_loss = torch.nn.functional.cross_entropy(model(x), y)
    x_adv = attacks.build("pgd-2", "linf:0.1", mode="train")(model, x, y)
    (clean_loss + torch.nn.functional.cross_entropy(model(x_adv), y)).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("spec", ["pgd-20", "cw-20", {"name": "pgd", "steps": 10, "restarts": 2}])
def test_run_stops_a_point_at_its_first_success_and_reports_what_the_full_attack_finds(spec, briefly_trained_cnn, digits):
    """The evaluation (`run`) needs only the success: a broken point leaves the batch, which saves most of the
    work on a weak model; the points reported broken are those the full attack's best iterate breaks."""
    rows = []

    class Counting(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            rows.append(x.shape[0])
            return self.model(x)

    model, x, y = Counting(briefly_trained_cnn), digits.test.x[:100], digits.test.y[:100]
    full = attacks.build(spec, "linf:0.15")(model, x, y)
    full_rows, rows[:] = sum(rows), []
    res = attacks.build(spec, "linf:0.15").run(model, x, y)
    with torch.no_grad():
        assert torch.equal(res.success, briefly_trained_cnn(full).argmax(1) != y)
        assert bool((briefly_trained_cnn(res.x_adv).argmax(1) != y)[res.success].all())
    assert res.success.float().mean() > 0.8
    assert sum(rows) < 0.35 * full_rows
