"""SCARL's objective (structure term, MI term, bank, heads) and FGSM adversarial training."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab import methods, models
from robustlab.attacks import FGSM
from robustlab.methods import StepContext
from robustlab.methods.scarl import class_means, mi_infonce, mi_scarl_code, ramp, structure_loss

K = 10


def _vectors_file(tmp_path, k=K, d=12):
    path = tmp_path / "words.npy"
    np.save(path, np.random.default_rng(0).normal(size=(k, d)).astype(np.float32))
    return f"file:{path}"


def _setup(tmp_path, **options):
    model = models.create("small_cnn", K, 1, 8, width=4, hidden=16)
    method = methods.create("scarl", threat="linf:0.1", vectors=_vectors_file(tmp_path), attack_steps=2, **options)
    method.build_parts(model, SimpleNamespace(class_names=[str(i) for i in range(K)]))
    return model, method


def test_structure_loss_zero_for_same_geometry_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 8, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    teacher = 3.7 * student @ rotation + torch.randn(1, 8, generator=g)  # same shape up to scale, rotation, shift
    assert structure_loss(student, teacher).item() < 1e-6
    assert structure_loss(student, torch.randn(6, 8, generator=g)).item() > 1e-2
    with pytest.raises(ValueError, match="present classes"):
        structure_loss(student, teacher[:4])


def test_bank_and_structure_term_use_only_the_classes_present_in_the_batch(tmp_path):
    model, method = _setup(tmp_path)
    model.train(), method.train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 1, 8, 8, generator=g)
    for labels in ([0, 3, 7], [5]):  # 3 of 10 classes, then a single class
        y = torch.tensor(labels * (12 // len(labels)))
        bank = method.bank.clone()
        ctx = StepContext(epoch=5, num_epochs=10, generator=torch.Generator().manual_seed(2))
        x_adv = method.adversarial(model, x, y, StepContext(generator=torch.Generator().manual_seed(2)))
        with torch.no_grad():
            v = F.normalize(method.image_head(model.forward_features(x_adv)), dim=1)
            u = F.normalize(method.text_head(method.words[y]), dim=1)
        loss, stats = method.loss(model, x, y, ctx)
        present = sorted(set(labels))
        student, _ = class_means(v, y, K)
        text, _ = class_means(u, y, K)
        w = ramp(5, 10)
        # the structure term compares the present classes' nodes only (a single class: no structure, 0)
        assert float(stats["geo"]) == pytest.approx(structure_loss(student[present], bank[present]).item(), rel=1e-5, abs=1e-7)
        # M[c] <- (1 − w) · mean_{y_i = c} u_i + w · M[c] for the present classes; the others keep their rows
        torch.testing.assert_close(method.bank[present], (1 - w) * text[present] + w * bank[present])
        absent = [c for c in range(K) if c not in present]
        assert torch.equal(method.bank[absent], bank[absent])
        loss.backward()
        assert method.image_head[0].weight.grad.abs().sum() > 0 and method.text_head[0].weight.grad.abs().sum() > 0
        model.zero_grad(), method.zero_grad()


def _towards(v0, target, t):
    """Slerp from v0 to target (unit vectors)."""
    theta = torch.arccos((v0 @ target).clamp(-1, 1))
    return (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * target) / torch.sin(theta)


@pytest.mark.parametrize("form", ["scarl_code", "infonce"])
def test_mi_term_decreases_as_a_feature_moves_towards_its_class_text(form):
    u_class = torch.eye(4, 8)  # orthonormal text features of 4 classes
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    u = u_class[y]
    g = torch.Generator().manual_seed(0)
    v = F.normalize(u + 0.3 * torch.randn(6, 8, generator=g), dim=1)
    v[0] = F.normalize(u_class[1] + u_class[2] + 0.3 * u_class[0], dim=0)  # sample 0 (class 0) resembles classes 1, 2
    mi = mi_scarl_code if form == "scarl_code" else mi_infonce
    values = []
    for t in torch.linspace(0, 1, 6):
        w = v.clone()
        w[0] = _towards(v[0], u_class[0], t)
        values.append(mi(w, u, y).item())
    assert all(b < a for a, b in zip(values, values[1:])), values


def test_mi_scarl_code_matches_the_official_formula():
    g = torch.Generator().manual_seed(3)
    v, u = F.normalize(torch.randn(5, 4, generator=g), dim=1), F.normalize(torch.randn(5, 4, generator=g), dim=1)
    y = torch.tensor([0, 1, 0, 2, 1])
    tau, c = 0.5, 0.01
    s = torch.exp(v @ u.T / tau)
    neg_terms = [-math.log(1 - (y[i] != y[j]) * s[i, j] / ((y[i] != y[j]) * s[i, j] + c)) for i in range(5) for j in range(5) if i != j]
    pos_terms = [-math.log(s[i, i] / (s[i, i] + c)) for i in range(5)]
    expected = sum(neg_terms) / len(neg_terms) + sum(pos_terms) / len(pos_terms)
    assert mi_scarl_code(v, u, y, tau, c).item() == pytest.approx(expected, rel=1e-5)


def test_ramp_class_means_and_resume_state(tmp_path):
    assert ramp(0, 200) == pytest.approx(math.exp(-5)) and ramp(200, 200) == 1.0
    means, present = class_means(torch.tensor([[1.0, 0], [3, 2], [5, 5]]), torch.tensor([2, 2, 0]), 4)
    assert present.tolist() == [True, False, True, False]
    assert means.tolist() == [[5, 5], [0, 0], [2, 1], [0, 0]]
    model, method = _setup(tmp_path)
    names = {n for n, _ in method.named_parameters()}
    assert {"image_head.0.weight", "text_head.3.weight"} <= names  # the Trainer optimises method.parameters()
    method.loss(model, torch.rand(8, 1, 8, 8), torch.arange(8), StepContext(generator=torch.Generator()))
    state = method.state_dict()
    resumed = methods.create("scarl", threat="linf:0.1", vectors=_vectors_file(tmp_path), attack_steps=2)
    torch.manual_seed(123)  # different initial heads: the loaded state must replace them
    resumed.build_parts(model, SimpleNamespace(class_names=[str(i) for i in range(K)]))  # the Trainer builds, then loads
    resumed.load_state_dict(state)
    for key, value in method.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_fgsm_at_uses_fgsm_or_random_start_fgsm():
    model = models.create("small_cnn", K, 1, 8, width=4, hidden=16).eval()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    plain = methods.create("fgsm_at", threat="linf:0.1")
    ctx = StepContext(generator=torch.Generator().manual_seed(0))
    assert torch.allclose(plain.adversarial(model, x, y, ctx), FGSM("linf:0.1")(model, x, y))
    fast = methods.create("fgsm_at", threat="linf:0.1", start="uniform")
    assert fast.train_attack.step == pytest.approx(0.125)
    x_adv = fast.adversarial(model, x, y, ctx)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and not torch.allclose(x_adv, plain.adversarial(model, x, y, ctx))
    loss, _ = plain.loss(model.train(), x, y, ctx)
    torch.testing.assert_close(loss, F.cross_entropy(model(FGSM("linf:0.1")(model, x, y)), y))  # adversarial inputs only


def test_cifar10_config_builds_every_method():
    from robustlab.config import load_study, study_runs

    runs = study_runs(load_study("configs/scarl_cifar10.yaml"))
    assert [label for label, _, _ in runs] == ["standard", "pgd_at", "trades", "fgsm_at", "scarl"]
    for _, _, cfg in runs:
        assert cfg.model.name == "preact_resnet18" and cfg.train.epochs == 200
        method = methods.create(cfg.method.name, threat=cfg.threat_model, **cfg.method.options)
        assert method.train_attack is None or method.train_attack.threat.eps == pytest.approx(8 / 255)
    scarl = methods.create("scarl", threat="linf:8/255", **runs[-1][2].method.options)
    assert scarl.vectors == "glove:glove.6B.50d.txt" and scarl.train_attack.step == pytest.approx(2 / 255)


def test_interrupted_scarl_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from robustlab import checkpoint, data, train
    from robustlab.config import make_run_config

    ds = data.load("digits")
    ds.train = ds.train.head(256)
    cfg = make_run_config({"model": {"name": "small_cnn", "width": 4, "hidden": 16}, "threat": "linf:0.2",
                           "method": {"name": "scarl", "vectors": _vectors_file(tmp_path), "attack_steps": 2},
                           "train": {"epochs": 2, "batch_size": 64, "select": {"by": "last", "attack": "pgd-2", "max_samples": 64}}})
    torch.manual_seed(0)
    train.train_run(cfg, tmp_path / "straight", dataset=ds, quiet=True, device="cpu")
    original = train.Trainer._train_epoch

    def crash_in_second_epoch(self, progress):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, progress)

    torch.manual_seed(0)
    monkeypatch.setattr(train.Trainer, "_train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train.train_run(cfg, tmp_path / "resumed", dataset=ds, quiet=True, device="cpu")
    monkeypatch.setattr(train.Trainer, "_train_epoch", original)
    train.train_run(cfg, tmp_path / "resumed", dataset=ds, resume=True, quiet=True, device="cpu")
    a, b = (checkpoint.load_weights(tmp_path / run / "last") for run in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = checkpoint.load_state(tmp_path / "resumed" / checkpoint.STATE_FILE)["method"]
    assert state["bank"].shape == (10, 64) and state["image_head.0.weight"].shape == (64, 16)
