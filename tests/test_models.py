"""The model contract for every registered model, plus structural checks of the named architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab import models
from robustlab.errors import RobustlabError
from robustlab.models import resnet

# Options that make each model cheap enough to run many times; models not listed use their defaults.
SMALL: dict[str, dict] = {
    "mlp": {"hidden": (32, 16)},
    "small_cnn": {"width": 4, "hidden": 16},
    "lenet": {},
    "resnet9": {"width": 4},
    "resnet20": {"width": 1},
    "resnet32": {"width": 1},
    "resnet32x10": {"width": 1},
    "preact_resnet18": {"width": 4},
    "wrn34_10": {"depth": 10, "widen": 1},
    "vgg13": {"width": 0.125},
}
# Extra configurations of registered models that change the structure.
EXTRA: list[tuple[str, dict]] = [
    ("vgg13", {"width": 0.125, "variant": "half_linear"}),
    ("vgg13", {"width": 0.125, "variant": "pure_linear"}),
    ("vgg13", {"width": 0.125, "batch_norm": False}),
    ("wrn34_10", {"depth": 10, "widen": 1, "dropout": 0.3}),
]
CONFIGS = [(name, SMALL.get(name, {})) for name in models.names()] + EXTRA
MNIST_SIZED = {"lenet", "small_cnn", "mlp"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: one intra-op thread is as fast and avoids OpenMP spin-waiting when the
    # machine is shared with other jobs. Restored afterwards so other test modules are unaffected.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cases():
    for name, kw in CONFIGS:
        sizes = (8, 28, 32) if name in MNIST_SIZED else (8, 32)
        for c in (1, 3):
            for s in sizes:
                tag = ",".join(f"{k}={v}" for k, v in kw.items() if k in ("variant", "batch_norm", "dropout"))
                yield pytest.param(name, kw, c, s, id=f"{name}[{tag}]-c{c}-s{s}" if tag else f"{name}-c{c}-s{s}")


CASES = list(_cases())


def _build(name, kw, c, s, num_classes=5, mean=None, std=None):
    torch.manual_seed(0)
    return models.create(name, num_classes, c, s, mean=mean, std=std, **kw).eval()


def _images(c, s, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, s, s, generator=g)


@pytest.mark.parametrize("name,kw,c,s", CASES)
def test_contract(name, kw, c, s):
    model = _build(name, kw, c, s)
    x = _images(c, s)
    with torch.no_grad():
        logits = model(x)
        z = model.forward_features(x)
        assert logits.shape == (2, 5)
        assert z.shape == (2, model.feature_dim)
        assert model.head.in_features == model.feature_dim and isinstance(model.head, nn.Linear)
        # the logits are exactly the head applied to the features
        assert torch.equal(model.forward_head(z), logits)
        if model.has_spatial_map:
            fmap = model.forward_map(x)
            assert fmap.dim() == 4 and fmap.shape[0] == 2
            # the map is what the neck consumes
            assert torch.equal(model.forward_head(model.neck(fmap)), logits)
        else:
            with pytest.raises(RobustlabError, match="spatial"):
                model.forward_map(x)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name,kw,c,s", CASES)
def test_input_gradient_matches_finite_differences(name, kw, c, s):
    # attacks follow this gradient: it must be the derivative of the logits. Float64 and h = 1e-8: small enough
    # that no ReLU or max pool switches within ±h here (h = 1e-6 already crossed a ReLU kink in resnet20)
    model = _build(name, kw, c, s).double()
    g = torch.Generator().manual_seed(2)
    x = _images(c, s).double().requires_grad_(True)
    w = torch.randn(2, 5, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    (model(x) * w).sum().backward()
    h = 1e-8
    with torch.no_grad():
        central = ((model(x + h * v) * w).sum() - (model(x - h * v) * w).sum()) / (2 * h)
    assert (x.grad * v).sum().item() == pytest.approx(central.item(), rel=1e-5, abs=1e-8)
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name,kw,c,s", CASES)
def test_normalisation_is_inside_the_model(name, kw, c, s):
    mean, std = (0.5,) * c, (0.5,) * c
    a = _build(name, kw, c, s, mean=mean, std=std)
    b = _build(name, kw, c, s)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("normalize.")}, strict=False)
    b.eval()
    x = _images(c, s)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b((x - 0.5) / 0.5), rtol=1e-5, atol=1e-6)
    assert torch.equal(a.normalize.mean, torch.full((1, c, 1, 1), 0.5))


@pytest.mark.parametrize("name,kw", [pytest.param(n, k, id=n) for n, k in CONFIGS[: len(models.names())]])
def test_wrong_input_shape(name, kw):
    model = _build(name, kw, 3, 16)
    for bad in (torch.rand(2, 1, 16, 16), torch.rand(2, 3, 17, 17), torch.rand(3, 16, 16)):
        with pytest.raises(RobustlabError, match="N×3×16×16"):
            model(bad)
        with pytest.raises(RobustlabError, match="N×3×16×16"):
            model.forward_features(bad)


@pytest.mark.parametrize("name,kw", [pytest.param(n, k, id=n) for n, k in CONFIGS[: len(models.names())]])
def test_odd_sizes_and_records(name, kw):
    for s in (11, 20):
        model = _build(name, kw, 1, s)
        with torch.no_grad():
            assert model(_images(1, s)).shape == (2, 5)
        assert model.arch == name and model.arch_kwargs == kw
        assert (model.in_channels, model.input_size, model.num_classes) == (1, s, 5)


def test_unknown_model_lists_known_ones():
    with pytest.raises(RobustlabError) as e:
        models.create("resnet-20", 10, 3, 32)
    msg = str(e.value)
    assert "resnet-20" in msg
    for name in models.names():
        assert name in msg


def test_unknown_option_names_it():
    with pytest.raises(RobustlabError, match="widht"):
        models.create("resnet20", 10, 3, 32, widht=2)
    with pytest.raises(RobustlabError, match="variant"):
        models.create("vgg13", 10, 3, 32, variant="semi_linear")


def test_bad_option_values():
    with pytest.raises(RobustlabError, match="depth"):
        models.create("wrn34_10", 10, 3, 32, depth=33, widen=1)
    with pytest.raises(RobustlabError, match="dropout"):
        models.create("wrn34_10", 10, 3, 32, depth=10, widen=1, dropout=1.0)
    with pytest.raises(RobustlabError, match="width"):
        models.create("vgg13", 10, 3, 32, width=0.0)
    with pytest.raises(RobustlabError, match="width"):
        models.create("resnet20", 10, 3, 32, width=0)


# --- structure -----------------------------------------------------------------------------------


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name,blocks,lo,hi", [("resnet20", 3, 0.265e6, 0.28e6), ("resnet32", 5, 0.455e6, 0.475e6)])
def test_cifar_resnet_structure(name, blocks, lo, hi):
    model = models.create(name, 10, 3, 32)
    stages = [model.body.layer1, model.body.layer2, model.body.layer3]
    assert [len(s) for s in stages] == [blocks] * 3
    assert all(isinstance(b, resnet.BasicBlock) for s in stages for b in s)
    assert [s[-1].conv2.out_channels for s in stages] == [16, 32, 64]
    assert lo < _params(model) < hi
    assert model.feature_dim == 64
    # option B: projection shortcuts exactly where the shape changes (first block of stages 2 and 3)
    projections = [b for s in stages for b in s if isinstance(b.shortcut, nn.Sequential)]
    assert len(projections) == 2


def test_resnet32x10_is_wide_resnet32():
    model = models.create("resnet32x10", 10, 3, 32)
    stages = [model.body.layer1, model.body.layer2, model.body.layer3]
    assert [len(s) for s in stages] == [5] * 3
    assert [s[-1].conv2.out_channels for s in stages] == [160, 320, 640]
    assert model.feature_dim == 640
    assert 45e6 < _params(model) < 47.5e6


def test_preact_resnet18_structure():
    model = models.create("preact_resnet18", 10, 3, 32)
    assert 11.1e6 < _params(model) < 11.25e6
    assert model.feature_dim == 512
    assert [len(getattr(model.body, f"layer{i}")) for i in (1, 2, 3, 4)] == [2, 2, 2, 2]
    assert model.body.stem.stride == (1, 1) and model.body.stem.kernel_size == (3, 3)
    assert _count(model, nn.MaxPool2d) == 0
    # the body ends with the final BN + ReLU
    assert isinstance(model.body[-1], nn.ReLU) and isinstance(model.body[-2], nn.BatchNorm2d)


def test_wrn34_10_parameter_count():
    # construction only (no forward): ~46.2M parameters
    model = models.create("wrn34_10", 10, 3, 32)
    assert 45.5e6 < _params(model) < 47e6
    assert model.feature_dim == 640
    assert [len(getattr(model.body, f"layer{i}")) for i in (1, 2, 3)] == [5, 5, 5]
    assert isinstance(model.body[-1], nn.ReLU) and isinstance(model.body[-2], nn.BatchNorm2d)


def test_wrn_dropout_only_in_train_mode():
    model = models.create("wrn34_10", 10, 3, 8, depth=10, widen=1, dropout=0.5)
    assert _count(model, nn.Dropout) == 3  # one per block, n = 1 block per stage
    x = _images(3, 8)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))
    assert _count(models.create("wrn34_10", 10, 3, 8, depth=10, widen=1), nn.Dropout) == 0


def test_resnet9_structure():
    model = models.create("resnet9", 10, 3, 32)
    assert 6.4e6 < _params(model) < 6.7e6
    assert model.feature_dim == 512
    assert _count(model, resnet.Residual) == 2 and _count(model, nn.MaxPool2d) == 3
    assert model.neck.mode == "max"
    assert model.forward_map(_images(3, 32)).shape == (2, 512, 4, 4)


def test_lenet_structure():
    model = models.create("lenet", 10, 1, 28)
    assert model.forward_map(_images(1, 28)).shape == (2, 16, 7, 7)
    assert model.feature_dim == 84
    assert [m.out_features for m in model.neck if isinstance(m, nn.Linear)] == [120, 84]


def test_vgg13_variants_structure():
    normal = models.create("vgg13", 10, 3, 32)
    half = models.create("vgg13", 10, 3, 32, variant="half_linear", width=0.25)
    pure = models.create("vgg13", 10, 3, 32, variant="pure_linear", width=0.25)
    assert 9.3e6 < _params(normal) < 9.5e6
    assert _count(normal, nn.ReLU) == 10 and _count(normal, nn.MaxPool2d) == 5
    assert _count(half, nn.ReLU) == 0 and _count(half, nn.MaxPool2d) == 5
    assert _count(pure, nn.ReLU) == 0 and _count(pure, nn.MaxPool2d) == 0 and _count(pure, nn.AvgPool2d) == 5
    for m in (normal, half, pure):
        assert _count(m, nn.BatchNorm2d) == 10
    assert [c.out_channels for c in pure.modules() if isinstance(c, nn.Conv2d)] == [16, 16, 32, 32, 64, 64, 128, 128, 128, 128]
    # 8×8 inputs: pools are skipped once the map is 1×1
    small = models.create("vgg13", 10, 1, 8, width=0.25)
    assert _count(small, nn.MaxPool2d) == 3
    assert small.forward_map(_images(1, 8)).shape == (2, 128, 1, 1)
    tiny = models.create("vgg13", 10, 1, 8, width=0.001)
    assert all(c.out_channels == 1 for c in tiny.modules() if isinstance(c, nn.Conv2d))


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _affine_gap(variant: str, s: int) -> float:
    torch.manual_seed(0)
    model = models.create("vgg13", 10, 3, s, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), variant=variant, width=0.25)
    _randomise_bn(model)
    model = model.double().eval()
    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.rand(4, 3, s, s, generator=g, dtype=torch.float64), torch.rand(4, 3, s, s, generator=g, dtype=torch.float64)
    a = 0.3
    with torch.no_grad():
        lhs = model(a * x1 + (1 - a) * x2)
        rhs = a * model(x1) + (1 - a) * model(x2)
        scale = model(x1).abs().max().item()
    return (lhs - rhs).abs().max().item() / max(scale, 1e-12)


@pytest.mark.parametrize("s", [8, 28, 32])
def test_vgg13_pure_linear_is_affine(s):
    assert _affine_gap("pure_linear", s) < 1e-4


def test_vgg13_pure_linear_is_affine_float32():
    model = _build("vgg13", {"variant": "pure_linear", "width": 0.25}, 3, 32)
    g = torch.Generator().manual_seed(6)
    x1, x2 = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
    with torch.no_grad():
        for a in (0.0, 0.3, 0.5, 1.0):
            torch.testing.assert_close(model(a * x1 + (1 - a) * x2), a * model(x1) + (1 - a) * model(x2),
                                       atol=1e-4, rtol=0)


def test_vgg13_half_linear_and_normal_are_not_affine():
    # the same check has the power to detect nonlinearity
    assert _affine_gap("half_linear", 32) > 1e-3
    assert _affine_gap("normal", 32) > 1e-3


def test_init():
    model = models.create("resnet20", 10, 3, 32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    conv = model.body.layer3[0].conv1  # 3×3, 64 outputs: fan_out = 576, std = sqrt(2 / 576)
    assert abs(conv.weight.std().item() - (2 / 576) ** 0.5) < 0.1 * (2 / 576) ** 0.5


@pytest.mark.parametrize("name,kw", [pytest.param(n, k, id=n) for n, k in CONFIGS])
def test_train_mode_backward_reaches_every_parameter(name, kw):
    model = _build(name, kw, 3, 16).train()
    x = _images(3, 16, n=4)
    fmap = model.forward_map(x) if model.has_spatial_map else None
    if fmap is not None:  # the Grad-CAM path: gradients w.r.t. the spatial map
        fmap.retain_grad()
        logits = model.forward_head(model.neck(fmap))
    else:
        logits = model(x)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    if fmap is not None:
        assert fmap.grad is not None and fmap.grad.shape == fmap.shape and fmap.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
