"""The training-objective contract, checked on every registered method (a new method is checked too), and
the options every PGD-trained method shares (`TrainAttack`)."""

from __future__ import annotations

import copy
import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab import methods, models
from robustlab.errors import RobustlabError
from robustlab.methods import METHODS, Method, StepContext, TrainAttack, train_attack_options
from robustlab.methods.alp import logit_pairing
from robustlab.methods.wcmi import WorstCaseMIMax
from robustlab.registry import Registry

THREAT = "linf:0.2"
K = 10
DATASET = SimpleNamespace(class_names=[f"class{i}" for i in range(K)], mean=(0.5,), std=(0.25,))


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _ctx(seed: int) -> StepContext:
    return StepContext(generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    path = tmp_path_factory.mktemp("vectors") / "words.npy"
    np.save(path, np.random.default_rng(0).normal(size=(K, 12)).astype(np.float32))
    return f"file:{path}"


def make(name: str, vectors: str, seed: int = 0):
    """(model, method) ready for `method.loss`: a small BatchNorm model (basic_encoder), the method's
    trainable parts built as the Trainer builds them, and a small configuration of each method."""
    allowed = METHODS.options(name, skip=("threat",))
    options = {"attack_steps": 2} if "attack_steps" in allowed else {}
    if "critic_options" in allowed:
        options["critic_options"] = {"hidden": 16, "width": [4, 8]}
    if "vectors" in allowed:
        options["vectors"] = vectors
    method = methods.create(name, threat=THREAT, **options)
    torch.manual_seed(seed)
    model = models.create("basic_encoder", K, 1, 8, DATASET.mean, DATASET.std, channels=(4, 8, 16), fc=32, z_dim=16)
    method.build_parts(model, DATASET)
    if name == "dat":
        from robustlab.vq import VQArch, VQModel

        method.use_discretiser(VQModel(VQArch(ch=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
                                              resolution=8, in_channels=1, out_ch=1, n_embed=8, embed_dim=2, num_groups=2)))
    return model.train(), method.train()


def training_attack(method: Method, model, x, y, ctx):
    """The method's training attack on (x, y), or None for a method that trains on clean inputs only.
    `wcmi`'s attack is batch-level (no labels, no `train_attack`): its `inputs`."""
    if method.train_attack is not None:
        return method.adversarial(model, x, y, ctx)
    if isinstance(method, WorstCaseMIMax):
        return method.inputs(model, x, ctx)
    return None


def trained_parameters(method: Method, model) -> list[torch.nn.Parameter]:
    """The model parameters the method's loss must reach: all, or all but the head for a method that
    trains the representation only (`ddp_find_unused`)."""
    return [p for n, p in model.named_parameters() if not (method.ddp_find_unused and n.startswith("head."))]


@pytest.mark.parametrize("name", methods.names())
def test_loss_is_a_scalar_whose_gradient_reaches_the_model_and_stats_are_logged_floats(name, vectors):
    model, method = make(name, vectors)
    x, y = _batch()
    loss, stats = method.loss(model, x, y, _ctx(0))
    assert loss.shape == () and loss.requires_grad
    assert all(torch.as_tensor(v).shape == () and not torch.as_tensor(v).requires_grad for v in stats.values())
    assert all(np.isfinite(float(v)) for v in stats.values())
    assert float(stats["loss"]) == pytest.approx(loss.item(), rel=1e-6)  # the logged loss is the optimised one
    loss.backward()
    for p in trained_parameters(method, model) + list(method.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    if method.ddp_find_unused:
        assert model.head.weight.grad is None


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", methods.names())
def test_training_attack_leaves_the_model_untouched(name, mode, vectors):
    model, method = make(name, vectors)
    model.train(mode == "train")
    x, y = _batch()
    for p in model.parameters():
        p.grad = torch.randn_like(p)  # gradients the Trainer accumulated must survive the attack
    before = {k: v.clone() for k, v in model.state_dict().items()}  # parameters and BatchNorm buffers
    grads = [p.grad.clone() for p in model.parameters()]
    x_adv = training_attack(method, model, x, y, _ctx(0))
    if x_adv is None:
        pytest.skip(f"{name} trains without an attack")
    assert not torch.equal(x_adv, x)
    assert model.training == (mode == "train")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) and p.requires_grad for p, g in zip(model.parameters(), grads))


@pytest.mark.parametrize("name", methods.names())
def test_the_same_seed_gives_the_same_loss_whatever_the_global_random_state(name, vectors):
    model, method = make(name, vectors)
    x, y = _batch()
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # a method must draw from ctx.generator only (resumed runs rely on it)
        m, net = copy.deepcopy(method), copy.deepcopy(model)
        losses.append(m.loss(net, x, y, _ctx(5))[0])
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize("name", methods.names())
def test_one_sgd_step_on_the_loss_lowers_it_on_the_same_batch(name, vectors):
    """A step against the loss's gradient lowers the loss recomputed on the same batch (same attack seed, the
    buffers the first call moved put back) in most trials; an inner maximisation may undo it now and then."""
    lower = []
    for trial in range(5):
        model, method = make(name, vectors, seed=trial)
        x, y = _batch(32, seed=100 + trial)
        buffers = list(model.buffers()) + list(method.buffers())
        saved = [b.clone() for b in buffers]
        before, _ = method.loss(model, x, y, _ctx(trial))
        before.backward()
        torch.optim.SGD(list(model.parameters()) + list(method.parameters()), lr=0.01).step()
        for b, s in zip(buffers, saved):
            b.copy_(s)
        after, _ = method.loss(model, x, y, _ctx(trial))
        lower.append(after.item() < before.item())
    assert sum(lower) >= 3, lower


# --- TrainAttack: the options of the PGD a method trains with --------------------------------------------

PGD_OPTIONS = {"attack_steps": 10, "attack_step": None, "attack_start": "uniform", "attack_mode": "eval"}


@pytest.mark.parametrize("name, own, attack", [
    ("pgd_at", {}, PGD_OPTIONS),
    ("alp", {"lam": 0.5, "clean_weight": 0.5}, PGD_OPTIONS),
    ("aalp_sw", {"alpha": 1.0, "clean_weight": 0.5}, PGD_OPTIONS),
    ("trades", {"beta": 6.0},
     {"attack_steps": 10, "attack_step": None, "attack_start": "normal", "attack_sigma": 0.001, "attack_mode": "eval"}),
    ("wcmi", {"bound": "dv", "dv_variant": "exact", "ma_rate": None, "critic": "local_global", "critic_options": None},
     {**PGD_OPTIONS, "attack_steps": 7, "attack_start": "none"}),
])
def test_methods_offer_the_training_attack_options_with_their_own_defaults(name, own, attack):
    options = METHODS.options(name, skip=("threat",))
    listed = {k: v for k, v in options.items() if k != "guided_dropout"}  # pgd_at lists it after the attack options
    assert listed == {**own, **attack} and list(listed) == [*own, *attack]


def test_training_attack_options_reach_the_attack():
    trades = methods.create("trades", threat=THREAT, attack_steps=3, attack_step=0.07, attack_start="uniform",
                            attack_sigma=0.01, attack_mode="train")
    a = trades.train_attack
    assert (a.steps, a.step, a.start, a.sigma, a.mode, a.loss, a.keep_best, a.restarts) == (3, 0.07, "uniform", 0.01, "train", "kl", False, 1)
    default = methods.create("pgd_at", threat=THREAT).train_attack
    assert (default.steps, default.step, default.start, default.loss) == (10, 0.05, "uniform", "ce")  # step eps / 4
    wcmi = methods.create("wcmi", threat=THREAT, attack_steps=3, attack_start="uniform")
    assert wcmi.attack == TrainAttack(steps=3, step=0.05, start="uniform", mode="eval")
    with pytest.raises(RobustlabError, match="unknown option 'attack_sigma'"):
        methods.create("pgd_at", threat=THREAT, attack_sigma=0.01)  # only the methods that start at x + σ·N(0, I) offer σ


def test_a_new_method_gets_the_training_attack_options_from_the_decorator():
    class Margin(Method):
        name = "margin"

        @train_attack_options(TrainAttack(steps=3, start="none"), fixed=("mode",))
        def __init__(self, threat, gamma: float = 1.0, *, attack: TrainAttack):
            super().__init__(threat)
            self.gamma, self.train_attack = gamma, attack.pgd(self.threat, loss="cw")

    params = inspect.signature(Margin.__init__).parameters
    assert [(n, p.default) for n, p in params.items()][2:] == [
        ("gamma", 1.0), ("attack_steps", 3), ("attack_step", None), ("attack_start", "none"), ("attack_sigma", 0.001)]
    registry = Registry("method")
    registry.register("margin")(Margin)
    made = registry.create("margin", threat=THREAT, skip=("threat",), attack_steps=4)
    assert (made.train_attack.steps, made.train_attack.start, made.train_attack.loss) == (4, "none", "cw")
    with pytest.raises(RobustlabError, match="attack_steps.*Allowed options: attack_sigma, attack_start, attack_step, attack_steps, gamma"):
        registry.create("margin", threat=THREAT, skip=("threat",), attack_steps="many")
    with pytest.raises(TypeError, match="not both"):
        Margin(THREAT, attack=TrainAttack(), attack_steps=2)
    with pytest.raises(TypeError, match="keyword-only parameter `attack"):
        train_attack_options()(lambda self, threat, attack=None: None)


# --- single objectives ----------------------------------------------------------------------------------

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
