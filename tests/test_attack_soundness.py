"""Every attack, on a briefly trained digits CNN: a point reported broken is misclassified at the returned
x_adv (a fresh forward pass), x_adv lies in [0, 1] and in the threat ball, and a defence written as a
wrapper that keeps its model in `.module` is attacked as the wrapper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import attacks, models
from robustlab.attacks.discrete import DiscreteAdversarial
from robustlab.distributed import unwrap
from robustlab.threat import ThreatModel

# small budgets keep each case well under a second; every registered family appears at least once
SPECS = {
    "fgsm": "fgsm", "pgd-5": "pgd-5", "cw-5": "cw-5",
    "pgd-kl": {"name": "pgd", "steps": 5, "loss": "kl", "random_start": "normal"},
    "pgd-restarts": {"name": "pgd", "steps": 5, "restarts": 2, "keep_best": False},
    "apgd-dlr-generic": {"name": "apgd", "steps": 10, "loss": "dlr"},
    "apgd-ce": {"name": "apgd-ce", "steps": 10},
    "apgd-dlr": {"name": "apgd-dlr", "steps": 10},
    "apgd-t": {"name": "apgd-t", "steps": 10, "n_target_classes": 3},
    "fab": {"name": "fab", "steps": 10},
    "fab-t": {"name": "fab-t", "steps": 10, "n_target_classes": 3},
    "square": {"name": "square", "queries": 100},
    "autoattack": {"name": "autoattack", "steps": 5, "n_target_classes": 2, "queries": 50},
    "autoattack-plus": {"name": "autoattack", "version": "plus", "steps": 5, "n_target_classes": 2, "queries": 50},
    "autoattack-custom": {"name": "autoattack", "version": "custom", "attacks": ["fgsm", {"name": "square", "queries": 50}]},
    "fisher": "fisher",
    "discrete": "discrete",  # DAT's training attack: not registered (it needs a discretiser), same contract
}
L2_ONLY = ("fisher", "discrete")
CASES = [pytest.param(spec, threat, id=f"{name}@{threat}") for name, spec in SPECS.items()
         for threat in ("linf:0.1", "l2:0.5") if name not in L2_ONLY or threat.startswith("l2")]


def _quarter_levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 4) / 4


def _build(spec, threat: str) -> attacks.Attack:
    if spec == "discrete":
        return DiscreteAdversarial(ThreatModel.parse(threat), _quarter_levels, steps=3, step=0.2, start_prob=1.0, mode="eval")
    return attacks.build(spec, threat, num_classes=10)


def test_the_cases_cover_every_registered_attack():
    families = {attacks.parse_spec(s if isinstance(s, str) else s["name"])[0] for s in SPECS.values() if s != "discrete"}
    assert families == set(attacks.names())


@pytest.fixture(scope="module")
def trained(digits, briefly_trained_cnn):
    return briefly_trained_cnn, digits.test.x[:40], digits.test.y[:40]


def _check_sound(model: nn.Module, attack: attacks.Attack, x: torch.Tensor, y: torch.Tensor, threat: str) -> attacks.AttackResult:
    res = attack.run(model, x, y)
    assert res.x_adv.shape == x.shape and res.success.shape == y.shape
    assert float(res.success.float().mean()) >= 0.25  # informative: the attack breaks a good share
    with torch.no_grad():
        wrong = model(res.x_adv).argmax(1) != y
    assert bool(wrong[res.success].all()), f"{int((res.success & ~wrong).sum())} points reported broken are classified correctly"
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    if not isinstance(attack, DiscreteAdversarial):  # DAT's example is the re-discretised point, off the ball by design
        assert bool(ThreatModel.parse(threat).contains(res.x_adv - x, atol=1e-6).all())
    return res


@pytest.mark.parametrize("spec,threat", CASES)
def test_every_reported_break_is_real(trained, spec, threat):
    model, x, y = trained
    _check_sound(model, _build(spec, threat), x, y, threat)


PERM = torch.roll(torch.arange(10), 1)  # the wrapper's class j is the base's class PERM[j]


class Relabelled(nn.Module):
    """A defence-style wrapper: the base model behind a relabelling of its classes, held in attribute `attr`."""

    def __init__(self, base: nn.Module, attr: str):
        super().__init__()
        self.attr, self.num_classes = attr, 10
        setattr(self, attr, base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attr)(x)[:, PERM]


@pytest.mark.parametrize("spec,threat", CASES)
def test_a_wrapper_that_keeps_its_model_in_module_is_attacked_as_the_wrapper(trained, spec, threat):
    base, x, y = trained
    y = torch.argsort(PERM)[y]  # the same points, labelled in the wrapper's classes
    res = _check_sound(Relabelled(base, "module"), _build(spec, threat), x, y, threat)
    same = _build(spec, threat).run(Relabelled(base, "inner"), x, y)  # the attribute's name must not matter
    assert torch.equal(res.x_adv, same.x_adv) and torch.equal(res.success, same.success)


def test_unwrap_strips_only_compilation_and_distribution():
    model = models.create("mlp", 10, 1, 8)
    assert unwrap(torch.compile(model, backend="eager")) is model
    wrapper = Relabelled(model, "module")
    assert unwrap(wrapper) is wrapper
    assert unwrap(torch.compile(wrapper, backend="eager")) is wrapper


def test_unwrap_strips_the_distributed_model_and_its_ddp():
    import torch.distributed as dist

    from robustlab.distributed import ddp_wrap

    model = models.create("mlp", 10, 1, 8)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        wrapped = ddp_wrap(model, torch.device("cpu"))
        assert unwrap(wrapped) is model
        assert unwrap(wrapped.ddp) is wrapped.ddp.module  # the DDP around the model's parts
    finally:
        dist.destroy_process_group()
