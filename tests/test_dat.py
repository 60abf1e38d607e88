"""DAT: the discrete adversarial example (straight-through gradient, ε-ball, [0, 1], model untouched),
mixup/cutmix targets, and the `dat` objective with its VQ discretiser trained and reused in a run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.distributed import World
from robustlab import data, methods, models
from robustlab.attacks.discrete import DiscreteAdversarial, straight_through
from robustlab.config import make_run_config
from robustlab.data.mixing import mix_batch
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel
from robustlab.train import train_run


def levels(x: torch.Tensor) -> torch.Tensor:
    """A non-differentiable discretiser: 5 grey levels between 0.2 and 0.8."""
    return 0.2 + 0.15 * torch.round((x.clamp(0.2, 0.8) - 0.2) / 0.15)


def small_model(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return models.create("vgg13" if bn else "small_cnn", 10, 1, 8, **({"width": 0.125} if bn else {"width": 4, "hidden": 16}))


def test_straight_through_gradient_is_the_gradient_at_q():
    model = small_model()
    x = torch.rand(6, 1, 8, 8, requires_grad=True)
    y = torch.arange(6)
    F.cross_entropy(model(straight_through(levels, x)), y, reduction="sum").backward()
    z = levels(x.detach()).requires_grad_(True)
    (g_at_q,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)
    assert torch.allclose(x.grad, g_at_q)
    assert not torch.allclose(g_at_q, torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0])


@pytest.mark.parametrize("base", ["Qx", "x"])
@pytest.mark.parametrize("steps", [1, 3])
def test_step_respects_eps_per_sample_and_pixel_range(base, steps):
    model = small_model()
    x = torch.rand(32, 1, 8, 8)
    x[:8] = 0.0  # black images: the clamp to [0, 1] is active
    y = torch.randint(0, 10, (32,))
    attack = DiscreteAdversarial(ThreatModel("l2", 0.5), levels, steps=steps, step=2.0, start_prob=1.0, perturb_base=base)
    gen = torch.Generator().manual_seed(0)
    b, x_k = attack.perturb(model, x, y, gen)
    norms = (x_k - b).flatten(1).norm(dim=1)
    assert torch.all(norms <= 0.5 + 1e-5)
    assert norms.max() > 0.45  # the step of 2.0 is projected back onto the sphere
    assert x_k.min() >= 0 and x_k.max() <= 1
    assert torch.allclose(b, levels(x) if base == "Qx" else x)
    out = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, levels(x_k))  # re-discretised


def test_official_step_is_alpha_times_the_normalised_gradient_at_qx():
    model = small_model()
    x = 0.3 + 0.4 * torch.rand(4, 1, 8, 8)  # interior, so neither the ball nor [0, 1] clips a step of 0.05
    y = torch.arange(4)
    attack = DiscreteAdversarial(ThreatModel("l2", 0.1), levels, steps=1, step=0.05, start_prob=0.0)
    _, x_1 = attack.perturb(model, x, y, torch.Generator().manual_seed(0))
    z = levels(x).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)
    expected = levels(x) + 0.05 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(x_1, expected, atol=1e-6)


def test_attack_leaves_the_model_untouched_in_train_mode():
    model = small_model(bn=True).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    a = DiscreteAdversarial(ThreatModel("l2", 0.1), levels, mode="train")
    out1 = a(model, x, y, generator=torch.Generator().manual_seed(3))
    out2 = a(model, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out1, out2)
    assert not model.training and all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN running stats restored


def test_soft_targets_and_bad_options():
    model = small_model()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([3, 1, 4, 1])
    attack = DiscreteAdversarial(ThreatModel("l2", 0.1), levels, start_prob=0.0)

    def perturbed(target):  # the perturbed point before the final discretisation
        return attack.perturb(model, x, target, torch.Generator().manual_seed(0))[1]

    # a one-hot soft target is the hard label; a uniform target moves the example elsewhere
    torch.testing.assert_close(perturbed(F.one_hot(y, 10).float()), perturbed(y))
    assert not torch.allclose(perturbed(torch.full((4, 10), 0.1)), perturbed(y))
    with pytest.raises(RobustlabError, match="l2"):
        DiscreteAdversarial(ThreatModel("linf", 0.1), levels)
    with pytest.raises(RobustlabError, match="perturb_base"):
        DiscreteAdversarial(ThreatModel("l2", 0.1), levels, perturb_base="z")


def test_mixup_and_cutmix_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    y = torch.arange(6)
    xm, t = mix_batch(x, y, 10, g, mixup_alpha=1.0)
    lam = float(t[0, 0])
    assert torch.allclose(t.sum(1), torch.ones(6))
    assert torch.allclose(xm, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    xc, t = mix_batch(x, y, 10, g, cutmix_alpha=1.0)
    kept = (xc == x).flatten(1).float().mean(1)  # share of each image that was not pasted over
    assert torch.allclose(kept, t[torch.arange(6), y], atol=1e-6)
    _, t = mix_batch(x, y, 10, g, smoothing=0.1)  # no mixing: smoothed one-hot
    assert torch.allclose(t[0], torch.tensor([0.91] + [0.01] * 9))


def test_dat_loss_is_clean_plus_adversarial_cross_entropy_on_a_batchnorm_model():
    from robustlab.methods import StepContext
    from robustlab.vq import VQArch, VQModel

    model = small_model(bn=True).train()
    method = methods.create("dat", threat="linf:0.2")
    torch.manual_seed(0)
    vq = VQModel(VQArch(ch=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4, resolution=8,
                        in_channels=1, out_ch=1, n_embed=8, embed_dim=2, num_groups=2))
    method.use_discretiser(vq)
    assert not method.state_dict() and not list(method.parameters())  # Q is frozen and no part of the method's state
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    torch.testing.assert_close(method.discretise(x), vq.reconstruct(x))
    x_adv = method.train_attack(model, x, y, generator=torch.Generator().manual_seed(0))
    loss, stats = method.loss(model, x, y, StepContext(generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y) + F.cross_entropy(model(x_adv), y))
    torch.testing.assert_close(stats["ce_adv"], F.cross_entropy(model(x_adv), y).detach())
    loss.backward()  # the train-mode attack restores BatchNorm buffers; the graph must survive it
    assert all(p.grad is not None for p in model.parameters())


TINY_VQ = {"ch": 4, "z_channels": 4, "num_groups": 2, "codebook_size": 16, "code_dim": 2, "epochs": 1}


def test_dat_run_trains_its_vq_and_setup_reuses_it(tmp_path):
    ds = data.load("digits")
    cfg = make_run_config({
        "dataset": "digits", "model": {"name": "small_cnn", "width": 4, "hidden": 16},
        "method": {"name": "dat", "vq": TINY_VQ, "mixup_alpha": 0.8, "cutmix_alpha": 1.0},
        "threat": "linf:0.2", "train": {"epochs": 1, "batch_size": 128, "select": {"by": "clean", "max_samples": 50}},
    })
    run = tmp_path / "run"
    result = train_run(cfg, run, dataset=ds, quiet=True)
    assert (run / "vq.safetensors").exists() and (run / "vq.json").exists()
    assert set(result.history[-1]) >= {"train_loss", "train_ce", "train_ce_adv", "val_clean"}
    stamp = (run / "vq.safetensors").stat().st_mtime_ns

    class FakeTrainer:
        dataset, device, quiet, run_dir, world = ds, torch.device("cpu"), True, run, World()

    method = methods.create("dat", threat="linf:0.2", vq=TINY_VQ)
    method.setup(FakeTrainer)  # what a resumed run does: the stored VQ is loaded, not retrained
    assert (run / "vq.safetensors").stat().st_mtime_ns == stamp
    assert not any("vq" in k for k in method.state_dict())  # the frozen discretiser is not part of the method state
    methods.create("dat", threat="linf:0.2", vq={**TINY_VQ, "seed": 1}).setup(FakeTrainer)  # other VQ settings: retrained
    assert (run / "vq.safetensors").stat().st_mtime_ns != stamp


def test_dat_with_a_vq_path_and_a_mismatched_vq(tmp_path):
    from robustlab.vq import VQTrainConfig, save_vq, train_vq

    ds = data.load("digits")
    vq, _ = train_vq(ds.train, ds.val, VQTrainConfig(**TINY_VQ), quiet=True)
    save_vq(tmp_path / "vq", vq, {})
    method = methods.create("dat", threat="linf:0.2", vq=str(tmp_path))

    class FakeTrainer:
        dataset, device, quiet, run_dir, world = ds, torch.device("cpu"), True, tmp_path, World()

    method.setup(FakeTrainer)
    x = ds.test.x[:4]
    assert torch.equal(method.discretise(x), vq.reconstruct(x))
    rgb = data.load("digits")
    rgb.train.x = rgb.train.x.expand(-1, 3, -1, -1)

    class RGBTrainer(FakeTrainer):
        dataset = rgb

    with pytest.raises(RobustlabError, match="1-channel"):
        methods.create("dat", threat="linf:0.2", vq=str(tmp_path)).setup(RGBTrainer)
