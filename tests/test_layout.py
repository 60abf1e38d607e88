"""Attacks run a CPU model's convolutions in channels_last where that cannot change the result
(robustlab.models.layout): the weights are switched for the attack only, a model that cannot run that way
or is randomised keeps its layout, and every reported break holds for the model as given."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import attacks
from robustlab.attacks.base import AttackResult, _confirmed
from robustlab.models.layout import attack_layout


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 4]


class _ViewFlatten(nn.Module):
    """A user model that flattens with `.view` (fails on a channels_last map)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.shape[0], -1))


class _LayoutSensitive(_ViewFlatten):
    """Computes something else when its feature map is not channels-first contiguous."""

    def forward(self, x):
        h = torch.relu(self.conv(x))
        if not h.is_contiguous():
            h = h * 2
        return self.fc(h.reshape(h.shape[0], -1))


class _Noisy(_ViewFlatten):
    """A randomised defence: Gaussian noise on the input, drawn from the global generator."""

    def forward(self, x):
        h = torch.relu(self.conv(x + 0.1 * torch.randn_like(x)))
        return self.fc(h.reshape(h.shape[0], -1))


def test_the_weights_are_channels_last_inside_and_the_same_tensors_after(briefly_trained_cnn, digits):
    model = briefly_trained_cnn
    before = [(p, p.data_ptr(), p.stride()) for p in _weights(model)]
    with attack_layout(model, digits.test.x[:16]) as switched:
        assert switched
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in _weights(model))
    assert all(p.data_ptr() == ptr and p.stride() == stride for p, ptr, stride in before)


def test_the_weights_are_put_back_when_the_attack_raises(briefly_trained_cnn, digits):
    model = briefly_trained_cnn
    before = [p.data_ptr() for p in _weights(model)]
    with pytest.raises(RuntimeError), attack_layout(model, digits.test.x[:16]):
        raise RuntimeError("attack failed")
    assert [p.data_ptr() for p in _weights(model)] == before


@pytest.mark.parametrize("cls", [_ViewFlatten, _LayoutSensitive, _Noisy])
def test_a_model_that_could_answer_differently_keeps_its_layout(cls):
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.rand(16, 1, 8, 8)
    state = torch.get_rng_state()
    with attack_layout(model, x) as switched:
        assert not switched
        assert all(p.is_contiguous() for p in _weights(model))
    assert torch.equal(torch.get_rng_state(), state)  # the probe draws nothing from the user's generator


def test_switched_off_by_the_environment_and_for_train_mode_attacks(briefly_trained_cnn, digits, monkeypatch):
    x = digits.test.x[:16]
    with attack_layout(briefly_trained_cnn, x, enabled=False) as switched:
        assert not switched
    monkeypatch.setenv("ROBUSTLAB_CHANNELS_LAST", "0")
    with attack_layout(briefly_trained_cnn, x) as switched:
        assert not switched


def test_the_attack_breaks_the_same_points_in_either_layout(briefly_trained_cnn, digits, monkeypatch):
    model, x, y = briefly_trained_cnn, digits.test.x[:60], digits.test.y[:60]
    attack = attacks.build("apgd-ce", "linf:0.1", num_classes=10)
    fast = attack.run(model, x, y)
    monkeypatch.setenv("ROBUSTLAB_CHANNELS_LAST", "0")
    plain = attack.run(model, x, y)
    assert 0 < int(plain.success.sum()) < 60
    assert torch.equal(fast.success, plain.success)


def test_a_break_that_does_not_hold_in_the_models_own_layout_is_withdrawn(briefly_trained_cnn, digits):
    model, x, y = briefly_trained_cnn, digits.test.x[:20], digits.test.y[:20]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    claimed = torch.ones(20, dtype=torch.bool)  # as if the attack had reported every point broken at x itself
    result = _confirmed(model, y, AttackResult(x.clone(), claimed, {"apgd-ce": ~claimed}))
    assert torch.equal(result.success, ~correct)
    assert torch.equal(result.stages["apgd-ce"], correct)


class _Recording(nn.Module):
    """Records, at each forward pass, whether its second convolution's weight is channels_last."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.conv2.weight.is_contiguous(memory_format=torch.channels_last))
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.reshape(h.shape[0], -1))


def test_evaluation_switches_and_the_training_attack_does_not():
    torch.manual_seed(0)
    model = _Recording().eval()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    attack = attacks.build("pgd-5", "linf:0.1", num_classes=10)
    attack.run(model, x, y)
    assert any(model.seen)  # attack.run (evaluation, validation): the attack's passes in channels_last
    model.seen.clear()
    attack(model, x, y)
    assert model.seen and not any(model.seen)  # a method's training attack: the model's own layout
