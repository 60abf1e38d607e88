"""Common corruptions: shape and range at every size, the severity of each corruption monotone in a
measurable property, the frost photographs from the data root, CE / mCE arithmetic, the CIFAR-10-C and
ImageNet-C readers, and the `corruption` analysis."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from robustlab import corruptions as C
from robustlab.analysis import ANALYSES, AnalysisContext
from robustlab.corruptions import readers
from robustlab.corruptions.metrics import ALEXNET_ERRORS, alexnet_baseline, mce
from robustlab.data import ImageDataset, Split
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel

GENERATED = [c for c in C.names() if c != "frost"]


@pytest.fixture(scope="module")
def frost_root(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    (root / "frost").mkdir()
    rng = np.random.default_rng(0)
    for name in C.weather.FROST_FILES:
        Image.fromarray(rng.integers(0, 256, (320, 300, 3), dtype=np.uint8)).save(root / "frost" / name)
    return root


def smooth_images(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, c, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("name", C.names())
@pytest.mark.parametrize("c,size", [(1, 8), (3, 32), (3, 64), (3, 224)])
def test_shape_range_and_seed(name, c, size, frost_root):
    x = smooth_images(2, c, size)
    for s in (1, 5) if size == 224 else C.SEVERITIES:
        y = C.corrupt(x, name, s, seed=3, root=frost_root)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert y.min() >= 0 and y.max() <= 1
        assert torch.equal(y, C.corrupt(x, name, s, seed=3, root=frost_root))
    assert not torch.allclose(C.corrupt(x, name, 5, seed=3, root=frost_root), x, atol=1e-3)


# --- severity is monotone in a measurable property (32×32, the CIFAR-10-C table; the digits use it too) ---
# Each property is measured with the same seed at every severity (common random numbers).

def impulse_spread(name: str, severity: int, offset: tuple[int, int] = (16, 16)) -> float:
    """Second moment (pixels²) about the impulse of the blurred image of one white pixel: the blur's extent."""
    x = torch.zeros(128, 1, 32, 32)
    x[:, :, offset[0], offset[1]] = 1.0
    y = C.corrupt(x, name, severity, seed=0)[:, 0]  # the same random draws at every severity
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    r2 = (rows - offset[0]) ** 2 + (cols - offset[1]) ** 2
    return float((y * r2).sum() / y.sum())


def residual_variance(name, s):
    x = torch.full((64, 3, 32, 32), 0.5)
    return float((C.corrupt(x, name, s, seed=0) - x).var())


def changed_share(name, s):
    x = torch.full((64, 3, 32, 32), 0.5)
    return float((C.corrupt(x, name, s, seed=0) != x).float().mean())


def snow_cover(name, s):
    return float(C.corrupt(torch.zeros(64, 3, 32, 32), name, s, seed=0).mean())


def content_gain(name, s):
    """Regression slope of output on input pixels: how much of the image survives the fog."""
    x = smooth_images(32, 3, 32)
    y = C.corrupt(x, name, s, seed=0)
    xc, yc = x - x.mean((1, 2, 3), keepdim=True), y - y.mean((1, 2, 3), keepdim=True)
    return -float(((xc * yc).sum((1, 2, 3)) / xc.pow(2).sum((1, 2, 3))).mean())  # negated: less content = more severe


def mean_shift(name, s):
    x = smooth_images(32, 3, 32) * 0.6
    return float((C.corrupt(x, name, s, seed=0) - x).mean())


def contrast_loss(name, s):
    x = smooth_images(32, 3, 32)
    return -float(C.corrupt(x, name, s, seed=0).std((2, 3)).mean() / x.std((2, 3)).mean())


def warp_roughness(name, s):
    """Discrete Laplacian of the sampled coordinate ramps: zero for an affine map, growing with a rougher field."""
    rows, cols = torch.meshgrid((torch.arange(32.0) + 0.5) / 32, (torch.arange(32.0) + 0.5) / 32, indexing="ij")
    x = torch.stack([cols, rows, torch.full_like(rows, 0.5)]).expand(16, 3, 32, 32).contiguous()
    y = C.corrupt(x, name, s, seed=0)[:, :2] * 32
    lap = y[..., :-2, 1:-1] + y[..., 2:, 1:-1] + y[..., 1:-1, :-2] + y[..., 1:-1, 2:] - 4 * y[..., 1:-1, 1:-1]
    return float(lap[..., 8:-8, 8:-8].pow(2).mean())  # away from the reflected borders


def lost_resolution(name, s):
    """Minus the number of distinct pixel columns left (pixelate keeps int(32·c) of 32)."""
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = C.corrupt(x, name, s, seed=0)
    return -float((y[..., 1:] != y[..., :-1]).flatten(1, 2).any(1).sum(1).float().mean() + 1)


def mse(name, s):
    x = smooth_images(32, 3, 32) * 0.5 + 0.5 * torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return float((C.corrupt(x, name, s, seed=0) - x).pow(2).mean())


PROPERTIES = {
    "gaussian_noise": residual_variance,
    "shot_noise": residual_variance,
    "impulse_noise": changed_share,
    "defocus_blur": impulse_spread,
    "glass_blur": impulse_spread,
    "motion_blur": impulse_spread,
    "zoom_blur": lambda n, s: impulse_spread(n, s, offset=(6, 24)),
    "snow": snow_cover,
    "fog": content_gain,
    "brightness": mean_shift,
    "contrast": contrast_loss,
    "elastic_transform": warp_roughness,
    "pixelate": lost_resolution,
    "jpeg_compression": mse,
}
# Severities the published CIFAR-10-C table makes equal in that property: motion blur (6, 2) vs (8, 2) (the extra
# taps weigh exp(−49/8) and less); elastic 1 vs 2 are both (almost) pure affine maps (the field of severity 2,
# α = 0.05 and σ = 0.2 of the side, moves pixels by ~0.04 px).
TIES = {"motion_blur": {(3, 4)}, "elastic_transform": {(1, 2)}}


@pytest.mark.parametrize("name", GENERATED)
def test_severity_is_monotone(name):
    values = [PROPERTIES[name](name, s) for s in C.SEVERITIES]
    for s in range(1, 5):
        if (s, s + 1) in TIES.get(name, set()):
            assert values[s] == pytest.approx(values[s - 1], rel=0.02, abs=1e-4), values
        else:
            assert values[s] > values[s - 1], (name, values)


# --- severity steps on the 8×8 digits (docs/dat.md lists these) -------------------------------------------
# Mean |corrupted − clean| over the 450 digits test images, the same seed at every severity. A step is "same" when
# the outputs are identical, a "tie" when it changes the mean by less than 2%, "weaker" when it lowers it by more.
# Every other step of every generated corruption raises it by more than 7%.
DIGITS_STEPS = {
    "glass_blur": {(1, 2): "tie", (4, 5): "tie"},  # Gaussian σ 0.05 vs 0.25 px (0.25 vs 0.4) next to the one-pixel scrambling
    "motion_blur": {(3, 4): "tie"},  # the published table's tie
    "snow": {(2, 3): "weaker", (4, 5): "weaker"},  # zoom + threshold of an 8-pixel flake layer
    "elastic_transform": {(1, 2): "weaker", (4, 5): "weaker"},  # the table shrinks the affine part as the field grows
    "pixelate": {(1, 2): "same", (2, 3): "tie", (3, 4): "same"},  # int(8·c) = 7, 7, 6, 6, 5 pixels
}


def digits_steps(name: str) -> dict[tuple[int, int], str]:
    from robustlab import data

    x = data.load("digits").test.x
    out = [C.corrupt(x, name, s, seed=0) for s in C.SEVERITIES]
    change = [float((y - x).abs().mean()) for y in out]
    steps = {}
    for s in range(1, 5):
        ratio = change[s] / change[s - 1]
        kind = "same" if torch.equal(out[s], out[s - 1]) else "tie" if abs(ratio - 1) < 0.02 else "weaker" if ratio < 1 else None
        if kind is not None:
            steps[(s, s + 1)] = kind
    return steps


@pytest.mark.parametrize("name", GENERATED)
def test_severity_steps_on_digits_are_the_documented_ones(name):
    assert digits_steps(name) == DIGITS_STEPS.get(name, {})


def test_frost_uses_the_photographs_and_its_share_grows(frost_root, tmp_path):
    share = []
    for s in C.SEVERITIES:
        dark = C.corrupt(torch.zeros(32, 3, 32, 32), "frost", s, seed=s, root=frost_root)  # c1·frost
        grey = C.corrupt(torch.full((32, 3, 32, 32), 0.5), "frost", s, seed=s, root=frost_root)  # 0.5·c0 + c1·frost
        share.append(float(dark.mean() / (2 * (grey - dark).mean())))  # c1·E[frost] / c0
    assert all(b > a for a, b in zip(share, share[1:])), share
    with pytest.raises(RobustlabError, match="frost photographs"):
        C.corrupt(torch.zeros(1, 3, 32, 32), "frost", 1, root=tmp_path)
    with pytest.raises(RobustlabError, match="severity"):
        C.corrupt(torch.zeros(1, 3, 32, 32), "fog", 6)
    with pytest.raises(RobustlabError, match="unknown corruption"):
        C.corrupt(torch.zeros(1, 3, 32, 32), "rain", 1)


# --- metrics ---------------------------------------------------------------------------------------

def test_ce_and_mce_arithmetic():
    model = {"clean_acc": 0.9, "acc": {"fog": [0.8, 0.6], "snow": [0.85, 0.85]}}
    base = {"clean_acc": 0.8, "acc": {"fog": [0.6, 0.4], "snow": [0.7, 0.7]}}
    out = mce(model, base)
    assert out["ce"]["fog"] == pytest.approx(100 * 0.6 / 1.0)  # (0.2 + 0.4) / (0.4 + 0.6)
    assert out["ce"]["snow"] == pytest.approx(100 * 0.3 / 0.6)
    assert out["mce"] == pytest.approx((60 + 50) / 2)
    assert out["relative_ce"]["fog"] == pytest.approx(100 * (0.6 - 0.2) / (1.0 - 0.4))
    assert out["relative_ce"]["snow"] == pytest.approx(100 * (0.3 - 0.2) / (0.6 - 0.4))
    assert mce(base, base)["mce"] == pytest.approx(100) and mce(base, base)["relative_mce"] == pytest.approx(100)
    flat = {"clean_acc": 0.8, "acc": {"fog": [0.8, 0.8], "snow": [0.7, 0.7]}}  # loses nothing to fog: relative CE undefined
    assert math.isnan(mce(model, flat)["relative_ce"]["fog"])


def test_mce_refuses_results_at_other_severities_or_corruptions():
    model = {"clean_acc": 0.9, "acc": {"fog": [0.8, 0.6], "snow": [0.85, 0.85]}, "severities": [1, 2]}
    base = {"clean_acc": 0.8, "acc": {"fog": [0.6, 0.4], "snow": [0.7, 0.7]}, "severities": [4, 5]}
    with pytest.raises(RobustlabError, match=r"severities \[1, 2\].*\[4, 5\]"):
        mce(model, base)
    with pytest.raises(RobustlabError, match=r"severities \[1, 2\].*\[1, 2, 3\]"):  # inferred from the list lengths
        mce({**model, "severities": None}, {"clean_acc": 0.8, "acc": {"fog": [0.6, 0.4, 0.3], "snow": [0.7, 0.7, 0.6]}})
    with pytest.raises(RobustlabError, match="snow.*only in the result; contrast.*only in the baseline"):
        mce(model, {**base, "severities": [1, 2], "acc": {"fog": [0.6, 0.4], "contrast": [0.5, 0.5]}})
    with pytest.raises(RobustlabError, match="severities"):  # the published AlexNet table averages severities 1-5
        mce({**model, "acc": {c: [0.5, 0.5] for c in ALEXNET_ERRORS}}, alexnet_baseline())


def test_alexnet_normalisation():
    alexnet_like = {"clean_acc": 0.5, "acc": {c: [1 - e] * 5 for c, e in ALEXNET_ERRORS.items()}}
    out = mce(alexnet_like, alexnet_baseline())
    assert out["corruptions"] == 15 and out["mce"] == pytest.approx(100)


# --- evaluation and readers --------------------------------------------------------------------------

class Recorder(nn.Module):
    """Predicts class 0 when the mean pixel is above 0.5, and records what it saw."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.stack([x.mean((1, 2, 3)) - 0.5, 0.5 - x.mean((1, 2, 3))], 1) + 0 * self.w


def test_corruption_accuracy_same_images_for_every_model(tmp_path):
    split = Split(smooth_images(40, 1, 8), torch.randint(0, 2, (40,)))
    a, b = Recorder(), Recorder()
    ra = C.corruption_accuracy(a, split, corruptions=["fog", "frost", "pixelate"], seed=1, root=tmp_path, quiet=True)
    C.corruption_accuracy(b, split, corruptions=["fog", "frost", "pixelate"], seed=1, root=tmp_path, quiet=True)
    assert all(torch.equal(u, v) for u, v in zip(a.seen, b.seen))
    assert set(ra["acc"]) == {"fog", "pixelate"} and "frost" in ra["skipped"]
    assert len(ra["per_image_acc"]) == 40
    assert ra["mean_acc"] == pytest.approx(np.mean([v for accs in ra["acc"].values() for v in accs]))
    assert np.mean(ra["per_image_acc"]) == pytest.approx(ra["mean_acc"], abs=1e-4)


def test_cifar_c_reader(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * 6, 32, 32, 3), dtype=np.uint8)
    labels = np.tile(np.arange(6, dtype=np.uint8), 5)
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    split = readers.read_cifar_c(tmp_path, "fog", 3, n=4)
    assert split.x.shape == (4, 3, 32, 32)
    assert torch.allclose(split.x[1].permute(1, 2, 0) * 255, torch.from_numpy(images[13]).float())
    assert split.y.tolist() == [0, 1, 2, 3]
    res = C.corruption_accuracy(Recorder(), Split(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)),
                                corruptions=["fog", "snow"], source="cifar_c", path=tmp_path, quiet=True)
    assert len(res["acc"]["fog"]) == 5 and "snow" in res["skipped"]


def test_imagenet_c_reader(tmp_path):
    from PIL import Image

    for cls in ("n01", "n02"):
        d = tmp_path / "fog" / "2" / cls
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((40, 48, 3), 60 * i + (100 if cls == "n02" else 0), dtype=np.uint8)).save(d / f"{i}.JPEG")
    split = readers.read_imagenet_c(tmp_path, "fog", 2, ["n01", "n02"], 16)
    assert split.x.shape == (4, 3, 16, 16) and split.y.tolist() == [0, 0, 1, 1]
    with pytest.raises(RobustlabError, match="does not exist"):
        readers.read_imagenet_c(tmp_path, "fog", 3, ["n01"], 16)


def test_corruption_analysis_with_a_run_baseline(tmp_path):
    from robustlab import models

    torch.manual_seed(0)
    model = models.create("small_cnn", 2, 1, 8, width=2, hidden=8).eval()
    ds = ImageDataset("toy", Split(smooth_images(8, 1, 8), torch.zeros(8, dtype=torch.long)), Split(smooth_images(8, 1, 8), torch.zeros(8, dtype=torch.long)),
                      Split(smooth_images(30, 1, 8, seed=2), torch.randint(0, 2, (30,))), ["a", "b"], (0.0,), (1.0,))
    ctx = AnalysisContext(model, ds, ThreatModel.parse("linf:0.1"), tmp_path, {}, torch.device("cpu"), quiet=True)
    res = ANALYSES.create("corruption", ctx, corruptions=["fog", "contrast"])
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "corruption.json").write_text(json.dumps(res))
    again = ANALYSES.create("corruption", ctx, corruptions=["fog", "contrast"], baseline=str(tmp_path))
    assert again["vs_baseline"]["mce"] == pytest.approx(100) or math.isnan(again["vs_baseline"]["mce"])
    assert (tmp_path / "figures" / "corruption.png").exists()
    with pytest.raises(RobustlabError, match="other settings"):
        ANALYSES.create("corruption", ctx, corruptions=["fog"], n=10, baseline=str(tmp_path))
