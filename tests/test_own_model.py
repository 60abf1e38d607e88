"""Models robustlab did not train (docs/own_model.md): `robustlab.evaluate_model`, `eval / analyze / sweep --model`,
safe checkpoint loading in RobustBench's layouts, RobustBench's architectures, EOT and AutoAttack `rand`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

import robustlab
from robustlab.cli import main
from robustlab.config import FlagConfig
from robustlab.errors import RobustlabError
from robustlab.evaluate import EvalResult, evaluate

MEAN, STD = 0.3, 0.35
FACTORY = """
from torch import nn


def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def probabilities():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))


def flat():
    return nn.Flatten()


def not_a_module():
    return "a string"
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory, digits):
    """A plain nn.Sequential trained for a few seconds on digits with its own normalisation, saved in RobustBench's
    layout (under `state_dict`, DataParallel's `module.` prefix), and the factory file that builds it."""
    root = tmp_path_factory.mktemp("own")
    (root / "net.py").write_text(FACTORY)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        loss = nn.functional.cross_entropy(model((digits.train.x - MEAN) / STD), digits.train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = root / "net.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 60}, weights)
    return root, model.eval(), weights


def _own(root, weights) -> list:
    """The CLI options that name the test's own model (net.py:make), its weights and the digits data."""
    return ["--model", f"{root / 'net.py'}:make", "--weights", weights, "--dataset", "digits"]


def _cli(*argv: str) -> int:
    return main([*map(str, argv), "--quiet"])


def _eval_cli(own, out: Path, suite: str, *extra: str) -> EvalResult:
    root, _, weights = own
    code = _cli(
        "eval",
        *_own(root, weights),
        "--mean",
        MEAN,
        "--std",
        STD,
        "--threat",
        "linf:0.1",
        "--suite",
        suite,
        "--n",
        60,
        "--out",
        out,
        *extra,
    )
    assert code == 0
    return EvalResult.load(out)


def test_cli_and_python_give_identical_per_sample_results_and_autoattack_is_at_most_the_paper_worst_case(
    own, digits, tmp_path
):
    _, model, _ = own
    x = digits.test.x[:60].permute(0, 2, 3, 1).numpy()  # NHWC float, as a user's numpy pipeline holds it
    y = digits.test.y[:60].to(torch.int32).numpy()
    for suite in ("paper", "autoattack"):
        cli = _eval_cli(own, tmp_path / suite, suite)
        py = robustlab.evaluate_model(model, x, y, "linf:0.1", suite, mean=[MEAN], std=[STD], quiet=True)
        assert cli.row() == py.row()
        assert cli.per_sample.keys() == py.per_sample.keys()
        for key in py.per_sample:
            np.testing.assert_array_equal(cli.per_sample[key], py.per_sample[key])
        assert [f["raised"] for f in cli.flags] == [f["raised"] for f in py.flags]
    paper, aa = EvalResult.load(tmp_path / "paper"), EvalResult.load(tmp_path / "autoattack")
    assert 0.8 < paper.clean  # the model learned digits: its normalisation was applied
    assert aa.attacks["autoattack"] <= paper.worst_case
    assert not (aa.per_sample["autoattack"] & ~paper.robust()).any()  # no point paper broke survives AutoAttack


def test_without_its_normalisation_the_model_is_evaluated_as_given(own, digits):
    """mean/std are the model's own: leaving them out evaluates another function (a lower clean accuracy here)."""
    _, model, _ = own
    x, y = digits.test.x[:100], digits.test.y[:100]
    with_norm = robustlab.evaluate_model(
        model, x, y, "linf:0.1", ["fgsm"], mean=[MEAN], std=[STD], flags=False, quiet=True
    )
    without = robustlab.evaluate_model(model, x, y, "linf:0.1", ["fgsm"], flags=False, quiet=True)
    with torch.no_grad():
        expected = float((model((x - MEAN) / STD).argmax(1) == y).float().mean())
    assert with_norm.clean == pytest.approx(expected)
    assert without.clean < with_norm.clean


def test_uint8_images_are_scaled_to_pixel_space(own, digits):
    _, model, _ = own
    x8 = (digits.test.x[:40] * 255).round().to(torch.uint8)
    r8 = robustlab.evaluate_model(model, x8.numpy(), digits.test.y[:40], "linf:0.1", ["fgsm"], flags=False, quiet=True)
    rf = robustlab.evaluate_model(
        model, x8.float() / 255, digits.test.y[:40], "linf:0.1", ["fgsm"], flags=False, quiet=True
    )
    np.testing.assert_array_equal(r8.per_sample["fgsm"], rf.per_sample["fgsm"])


# --- bad input: one line naming the value and what is allowed ----------------------------------------------


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("not_a_module", "not_a_module() returned str; allowed: a torch.nn.Module"),
        ("flat", "returns 64 logits per image; the data has 10 classes"),
        ("probabilities", "outputs are probabilities"),
        ("nope", "defines no function or class 'nope'"),
    ],
)
def test_bad_factories_are_one_line_errors(own, capsys, factory, message):
    root, _, _ = own
    code = _cli("eval", "--model", f"{root / 'net.py'}:{factory}", "--dataset", "digits", "--threat", "linf:0.1")
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_bad_arrays_are_one_line_errors(own, digits):
    _, model, _ = own
    x, y = digits.test.x[:20], digits.test.y[:20]
    with pytest.raises(RobustlabError, match=r"must lie in \[0, 1\].*got values in \[0, 255\]"):
        robustlab.evaluate_model(model, x * 255, y, "linf:0.1", ["fgsm"], quiet=True)
    with pytest.raises(RobustlabError, match="labels must be a 1-d integer array.*got float32"):
        robustlab.evaluate_model(model, x, y.float(), "linf:0.1", ["fgsm"], quiet=True)
    with pytest.raises(
        RobustlabError, match=r"mean=\(0.5, 0.5, 0.5\) has 3 values; allowed: one per image channel \(1\)"
    ):
        robustlab.evaluate_model(model, x, y, "linf:0.1", ["fgsm"], mean=[0.5] * 3, std=[0.2] * 3, quiet=True)
    with pytest.raises(RobustlabError, match="label 10 is out of range; allowed: 0..9"):
        robustlab.evaluate_model(model, x, torch.full_like(y, 10), "linf:0.1", ["fgsm"], quiet=True)
    with pytest.raises(RobustlabError, match=r"allowed: logits of shape \(2, K\)"):
        robustlab.evaluate_model(nn.Identity(), x, y, "linf:0.1", ["fgsm"], quiet=True)


def test_mean_std_of_the_wrong_length_on_the_command_line(own, capsys):
    root, _, weights = own
    code = _cli(
        "eval",
        *_own(root, weights),
        "--mean",
        "0.5",
        "0.5",
        "--std",
        "0.2",
        "0.2",
        "--threat",
        "linf:0.1",
    )
    err = capsys.readouterr().err
    assert code == 2 and "mean=(0.5, 0.5) has 2 values; allowed: one per image channel (1)" in err


# --- checkpoints, loaded safely ------------------------------------------------------------------------


class _Evil:
    """Unpickling this object calls open(path, "w"): it would create the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_malicious_pickle_as_weights_never_executes(own, tmp_path):
    root, _, _ = own
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"0.weight": torch.zeros(1)}, "payload": _Evil(marker)}, evil)
    assert not marker.exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustlab",
            "eval",
            "--model",
            f"{root / 'net.py'}:make",
            "--weights",
            str(evil),
            "--dataset",
            "digits",
            "--threat",
            "linf:0.1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "refused" in proc.stderr and "never unpickles code" in proc.stderr
    assert not marker.exists()


def test_every_layout_loads_and_a_mismatch_lists_missing_unexpected_and_misshaped(own, tmp_path, digits):
    from robustlab.checkpoint import load_outside_model, read_state_dict

    root, model, _ = own
    state = model.state_dict()
    layouts = {
        "plain.pth": state,
        "nested.pt": {"model_state_dict": state, "optimizer": {"lr": 0.1}},
        "prefixed.pt": {f"module.{k}": v for k, v in state.items()},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    for name in [*layouts, "w.safetensors"]:
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    built = load_outside_model(f"{root / 'net.py'}:make", tmp_path / "w.safetensors", num_classes=10, in_channels=1)
    with torch.no_grad():
        assert torch.equal(built(digits.test.x[:5]), model(digits.test.x[:5]))
    bad = dict(state)
    bad.pop("3.bias")
    bad["extra.weight"] = torch.zeros(2)
    bad["1.weight"] = torch.zeros(5, 64)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(RobustlabError) as err:
        load_outside_model(f"{root / 'net.py'}:make", tmp_path / "bad.pt", num_classes=10, in_channels=1)
    text = str(err.value)
    assert "missing ['3.bias']" in text and "unexpected ['extra.weight']" in text
    assert "1.weight: checkpoint (5, 64) vs model (32, 64)" in text


# --- RobustBench's architectures -------------------------------------------------------------------------

# parameter counts of the CIFAR-10 models (10 classes), as published for these architectures
PARAMETERS = {
    "wrn-28-10": 36_479_194,
    "wrn-34-10": 46_160_474,
    "preact-resnet-18": 11_171_146,
    "resnet-18": 11_173_962,
    "resnet-50": 23_520_842,
}


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_robustbench_parameter_counts(name):
    from robustlab.models.robustbench import robustbench_model

    with torch.device("meta"):
        model = robustbench_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]


def test_robustbench_parameter_names_and_shapes():
    """Spot checks of RobustBench's key names (robustbench/model_zoo/architectures), WRN-70-16 on the meta device."""
    from robustlab.models.robustbench import robustbench_model

    def shapes(name):
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in robustbench_model(name).state_dict().items()}

    dm = shapes("dm-wrn-70-16")
    assert dm["mean"] == dm["std"] == (3, 1, 1)
    assert dm["init_conv.weight"] == (16, 3, 3, 3)
    assert dm["layer.0.block.0.shortcut.weight"] == (256, 16, 1, 1)
    assert dm["layer.2.block.10.conv_1.weight"] == (1024, 1024, 3, 3)
    assert "layer.2.block.11.conv_0.weight" not in dm and "layer.0.block.1.shortcut.weight" not in dm
    assert dm["batchnorm.running_var"] == (1024,) and dm["logits.weight"] == (10, 1024)
    weights = sum(
        int(np.prod(s))
        for k, s in dm.items()
        if k not in ("mean", "std") and "running" not in k and "num_batches" not in k
    )
    assert round(weights / 1e6, 1) == 266.8  # the size quoted for WRN-70-16 (about 267 M parameters)
    wrn = shapes("wrn-34-10")
    assert wrn["block1.layer.0.convShortcut.weight"] == (160, 16, 1, 1)
    assert "block1.layer.1.convShortcut.weight" not in wrn and wrn["fc.weight"] == (10, 640)
    assert wrn["block3.layer.4.bn2.running_mean"] == (640,)
    pre = shapes("preact-resnet-18")
    assert pre["layer2.0.shortcut.0.weight"] == (128, 64, 1, 1) and pre["linear.weight"] == (10, 512)
    dmp = shapes("dm-preact-resnet-18")
    assert dmp["layer_1.0.shortcut.weight"] == (128, 64, 3, 3) and dmp["conv_2d.weight"] == (64, 3, 3, 3)
    r50 = shapes("resnet-50")
    assert r50["layer1.0.conv3.weight"] == (256, 64, 1, 1) and r50["layer4.2.bn3.weight"] == (2048,)


def test_robustbench_names_are_checked():
    from robustlab.models.robustbench import robustbench_model

    with pytest.raises(RobustlabError, match="unknown architecture; allowed: FAMILY-DEPTH"):
        robustbench_model("vit-16")
    with pytest.raises(RobustlabError, match="write wrn-DEPTH-WIDTH"):
        robustbench_model("wrn-28")
    with pytest.raises(RobustlabError, match="depth=29; allowed: 6n"):
        robustbench_model("wrn-29-10")


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    """32×32 RGB images as uint8 NHWC with labels in an .npz (nothing can be downloaded here)."""
    path = tmp_path_factory.mktemp("npz") / "c.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 10, 12))
    return path


def test_a_robustbench_checkpoint_in_its_layout_evaluates_from_the_command_line(tmp_path, cifar_like):
    """A DeepMind WRN (Swish, mean/std buffers) saved as RobustBench stores it; what robustlab reports is what the
    module itself predicts."""
    from robustlab.models.robustbench import robustbench_model

    torch.manual_seed(0)
    module = robustbench_model("dm-wrn-10-1").eval()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    module.mean.fill_(0.45)
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}}, tmp_path / "dm.pt")
    argv = [
        "eval",
        "--model",
        "robustbench:dm-wrn-10-1",
        "--weights",
        tmp_path / "dm.pt",
        "--data",
        cifar_like,
        "--threat",
        "linf:8/255",
        "--suite",
        "fgsm",
        "--no-flags",
        "--out",
        tmp_path / "out",
    ]
    assert _cli(*argv) == 0
    result = EvalResult.load(tmp_path / "out")
    arrays = np.load(cifar_like)
    x = torch.from_numpy(arrays["x"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = (module(x).argmax(1) == torch.from_numpy(arrays["y"])).numpy()
    np.testing.assert_array_equal(result.per_sample["clean"], expected)
    assert _cli(*argv, "--mean", "0.5", "0.5", "0.5", "--std", "0.2", "0.2", "0.2") == 2  # would normalise twice


@pytest.mark.parametrize("name", ["wrn-10-2", "dm-wrn-10-1", "preact-resnet-18", "dm-preact-resnet-18", "resnet-18"])
def test_robustbench_models_run_and_have_the_contract(name):
    from robustlab.models.robustbench import robustbench_model

    torch.manual_seed(0)
    model = robustbench_model(name).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = model.forward_features(x)
        assert z.dim() == 2 and torch.allclose(model.forward_head(z), model(x))
        assert model(x).shape == (2, 10)


# --- randomised models: EOT and AutoAttack rand -----------------------------------------------------------


class Noisy(nn.Module):
    """A randomised defence: Gaussian noise on the input at every forward pass."""

    def __init__(self, inner: nn.Module, sigma: float):
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        return self.inner(x + self.sigma * torch.randn_like(x))


def test_eot_averages_the_gradient_over_passes():
    """On x -> w·(x + noise·r) with r random per pass, one pass's gradient is w + noise·r; the EOT average of n
    passes is w plus noise·(mean of n draws), much closer to the expected gradient w."""
    from robustlab.attacks.eot import expected_grad

    w = torch.linspace(-1, 1, 16)

    def model(x):
        return (x * (w + 3.0 * torch.randn_like(x))).sum(1, keepdim=True)

    torch.manual_seed(0)
    x = torch.rand(256, 16)
    _, one, _ = expected_grad(model, x, lambda out: out[:, 0], eot_iter=1)
    _, many, _ = expected_grad(model, x, lambda out: out[:, 0], eot_iter=64)
    assert (many - w).pow(2).mean() < (one - w).pow(2).mean() / 30  # the noise's variance falls as 1/64
    with pytest.raises(RobustlabError, match="eot_iter"):
        expected_grad(model, x, lambda out: out[:, 0], eot_iter=0)


def test_randomised_flag_points_to_autoattack_rand(digits, tiny_cnn):
    torch.manual_seed(0)
    result = robustlab.evaluate_model(
        Noisy(tiny_cnn, 0.2), digits.test.x[:40], digits.test.y[:40], "linf:0.05", ["fgsm"], quiet=True
    )
    flag = next(f for f in result.flags if f["name"] == "randomised")
    assert flag["raised"] and "--suite autoattack-rand" in flag["explanation"]


class RandomPhase(nn.Module):
    """A randomised defence: high-frequency input noise with a random phase at every pass,
    x + (a/w)·sin(w·x + u), u ~ U[0, 2π) per pixel. It moves the input by at most a/w = 0.003, so predictions
    hardly change between passes, but it multiplies each pixel's gradient by 1 + a·cos(w·x + u), a random factor
    of mean 1 that is negative for 39 % of the draws with a = 3: one pass's gradient sign is noise, its
    expectation the undefended model's gradient."""

    def __init__(self, inner: nn.Module, a: float = 3.0, w: float = 1000.0):
        super().__init__()
        self.inner, self.a, self.w = inner, a, w

    def forward(self, x):
        u = 2 * torch.pi * torch.rand_like(x)
        return self.inner(x + self.a / self.w * torch.sin(self.w * x + u))


@pytest.fixture(scope="module")
def randomised(digits):
    """A small CNN trained with Gaussian input noise, defended by RandomPhase."""
    from robustlab import models

    torch.manual_seed(0)
    model = models.create("small_cnn", 10, 1, 8, width=8, hidden=32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(15):
        perm = torch.randperm(len(digits.train))
        for i in range(0, len(perm), 64):
            x, y = digits.train.x[perm[i : i + 64]], digits.train.y[perm[i : i + 64]]
            loss = nn.functional.cross_entropy(model((x + 0.15 * torch.randn_like(x)).clamp(0, 1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return RandomPhase(model.eval())


def test_autoattack_rand_on_a_randomised_model(randomised, digits):
    """On the same points (one clean pass): the randomised flag fires; AutoAttack `rand` (APGD-CE and APGD-DLR with
    EOT over 20 passes) reports a robust accuracy no higher than `standard`; and EOT is what makes the difference:
    the same APGD-CE without it (standard's first component) is blinded by the noisy gradient."""
    torch.manual_seed(0)
    split = digits.test.head(40)
    suite = ["autoattack", {"name": "autoattack", "version": "rand"}]
    result = evaluate(randomised, split, "linf:0.1", suite, num_classes=10, quiet=True, flags=FlagConfig(max_samples=20))
    rand, standard = result.attacks["autoattack(version=rand)"], result.attacks["autoattack"]
    assert list(result.stages["autoattack(version=rand)"]) == ["apgd-ce", "apgd-dlr"]
    assert rand <= standard
    assert result.stages["autoattack(version=rand)"]["apgd-ce"] < result.stages["autoattack"]["apgd-ce"] - 0.2
    assert result.clean > 0.9 and rand > 0  # a sound model: clean mistakes are few, robust points remain
    assert next(f for f in result.flags if f["name"] == "randomised")["raised"]


# --- analyses on an outside model ----------------------------------------------------------------------------

ANALYSES_OPTIONS = [
    "n=40",
    "max_samples=40",
    "controls=1",
    "seeds=1",
    "epochs=1",
    "max_train=64",
    "max_test=40",
    "anchors=8",
    "partners=16",
    "js_rows=40",
    "severities=[1]",
    "eps=[0.1]",
]


def test_the_analyses_run_on_an_outside_model_with_a_feature_layer(own, tmp_path):
    root, _, weights = own
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32))
    sets = [a for opt in [*ANALYSES_OPTIONS, f"vectors=file:{vectors}"] for a in ("--set", opt)]
    what = "fisher,cckl,cca,similarity,corruption,vulnerability"
    code = _cli(
        "analyze",
        *_own(root, weights),
        "--mean",
        MEAN,
        "--std",
        STD,
        "--feature-layer",
        "2",
        "--threat",
        "linf:0.1",
        "--what",
        what,
        *sets,
        "--out",
        tmp_path / "a",
    )
    assert code == 0
    for name in what.split(","):
        assert json.loads((tmp_path / "a" / "analysis" / f"{name}.json").read_text())
    cca = json.loads((tmp_path / "a" / "analysis" / "cca.json").read_text())
    assert cca["natural"]["accuracy"] > 0.8  # the outside model's own predictions, with its normalisation


def test_a_missing_feature_layer_names_the_layers(own, capsys):
    root, _, weights = own
    code = _cli(
        "analyze",
        *_own(root, weights),
        "--feature-layer",
        "fc7",
        "--threat",
        "linf:0.1",
        "--what",
        "similarity",
    )
    err = capsys.readouterr().err
    assert code == 2 and "feature layer 'fc7' does not exist" in err and "Layers: 0, 1, 2, 3" in err


def test_without_forward_features_or_a_feature_layer_the_error_says_what_to_do(own):
    from robustlab.checkpoint import load_outside_model

    root, _, weights = own
    model = load_outside_model(f"{root / 'net.py'}:make", weights, num_classes=10, in_channels=1)
    with pytest.raises(RobustlabError, match="has no forward_features; name the layer .* --feature-layer"):
        model.forward_features(torch.rand(2, 1, 8, 8))


def test_sweep_takes_an_outside_model(own, tmp_path):
    root, _, weights = own
    code = _cli(
        "sweep",
        *_own(root, weights),
        "--mean",
        MEAN,
        "--std",
        STD,
        "--threat",
        "linf:0.1",
        "--eps",
        "0.05,0.1",
        "--suite",
        "fgsm",
        "--n",
        40,
        "--out",
        tmp_path,
    )
    assert code == 0
    curve = json.loads((tmp_path / "sweep.json").read_text())["net-make"]
    assert curve["eps"] == [0.0, 0.05, 0.1] and curve["worst_case"][0] > 0.8
    assert (tmp_path / "robustness_curve.png").exists()


def test_model_options_with_a_run_directory_are_refused(tmp_path, capsys):
    code = _cli("eval", str(tmp_path), "--dataset", "digits")
    assert code == 2 and "--dataset go with --model" in capsys.readouterr().err


def test_the_factory_file_is_imported_as_written(tmp_path):
    """A factory that takes its own import path into account (relative imports of helper files work)."""
    (tmp_path / "helper.py").write_text("WIDTH = 7\n")
    (tmp_path / "net.py").write_text(
        textwrap.dedent("""
        import sys, pathlib
        sys.path.insert(0, str(pathlib.Path(__file__).parent))
        from torch import nn
        from helper import WIDTH
        def make():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, WIDTH), nn.Linear(WIDTH, 10))
    """)
    )
    from robustlab.models import build_outside

    assert build_outside(f"{tmp_path / 'net.py'}:make")[1].out_features == 7


# --- studies: outside models beside trained runs ---------------------------------------------------------------


def test_a_study_evaluates_reports_and_analyses_an_outside_model(own, tmp_path):
    from robustlab.config import load_study, outside_config
    from robustlab.report import RunRecord, StudyContext
    from robustlab.study import run_study

    root, model, weights = own
    cfg = tmp_path / "mixed.yaml"
    cfg.write_text(textwrap.dedent(f"""
        name: mixed
        dataset: digits
        model: {{name: small_cnn, width: 8, hidden: 32}}
        threat: linf:0.1
        train: {{epochs: 1, batch_size: 128}}
        eval: {{suite: quick, max_samples: 40, flags: {{max_samples: 20}},
                extra_suites: [{{suite: autoattack, max_samples: 10}}]}}
        runs:
          - method: standard
        outside:
          - {{label: mine, model: "{root / 'net.py'}:make", weights: "{weights}", mean: [{MEAN}], std: [{STD}],
              feature_layer: "2"}}
        sections: [robustness]
    """))
    report = run_study(cfg, out_root=tmp_path / "runs", quiet=True)
    text = report.read_text()
    assert "| standard |" in text and "| mine | outside |" in text and "outside model" in text
    mine = EvalResult.load(tmp_path / "runs/mixed/mine")
    direct = robustlab.evaluate_model(model, *_digits_head(40), "linf:0.1", "quick", mean=[MEAN], std=[STD], flags=False,
                                      quiet=True)
    assert mine.row() == direct.row()  # the study evaluated the outside model with its normalisation
    assert (tmp_path / "runs/mixed/mine/eval_autoattack.json").exists() and mine.flags
    stamp = (tmp_path / "runs/mixed/mine/eval.json").stat().st_mtime_ns
    run_study(cfg, out_root=tmp_path / "runs", quiet=True)  # reused: same weights, same settings
    assert (tmp_path / "runs/mixed/mine/eval.json").stat().st_mtime_ns == stamp
    study = load_study(cfg)
    out = study.outside[0]
    record = RunRecord("mine", "main", outside_config(study, out), tmp_path / "runs/mixed/mine", mine, outside=out)
    ctx = StudyContext(study, tmp_path / "runs/mixed", [record], torch.device("cpu"), quiet=True)
    similarity = ctx.analysis(record, "cckl", anchors=8, partners=16, js_rows=40, n=40)
    assert similarity["n"] == 40 and list((tmp_path / "runs/mixed/mine/analysis").glob("cckl_*.json"))


def _digits_head(n):
    from robustlab import data

    ds = data.load("digits")
    return ds.test.x[:n], ds.test.y[:n]


def test_an_outside_model_passes_on_the_modules_forward_head():
    from robustlab.checkpoint import load_outside_model

    torch.manual_seed(0)
    model = load_outside_model("robustbench:wrn-10-2", num_classes=10, in_channels=3)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.forward_head(model.forward_features(x)), model(x), atol=1e-6)
    hooked = load_outside_model("robustbench:wrn-10-2", num_classes=10, in_channels=3, feature_layer="block2")
    assert hooked.forward_features(x).shape == (2, 64 * 16 * 16)  # block2 of a width-2 WRN: 64 channels, 16×16
    with pytest.raises(RobustlabError, match="no forward_head"):
        hooked.forward_head(torch.zeros(2, 10))


def test_images_the_model_was_not_built_for_are_a_one_line_error(capsys):
    code = _cli("eval", "--model", "robustbench:wrn-10-1", "--dataset", "digits", "--threat", "linf:0.1")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fails on images of shape (1, 8, 8)" in err and len(err.splitlines()) == 1


def test_a_study_with_a_missing_outside_weight_file_stops_before_training(tmp_path):
    from robustlab.study import run_study

    cfg = tmp_path / "s.yaml"
    cfg.write_text("name: s\ndataset: digits\nruns: [{method: standard}]\n"
                   "outside: [{label: mine, model: 'robustbench:wrn-10-1', weights: nowhere.pt}]\n")
    with pytest.raises(RobustlabError, match="outside model 'mine': weights file nowhere.pt does not exist"):
        run_study(cfg, out_root=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs/s/standard/model.safetensors").exists()


def test_the_python_example_of_docs_own_model_runs():
    import re

    text = (Path(__file__).parents[1] / "docs" / "own_model.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    scope: dict = {}
    exec(compile(code, "docs/own_model.md", "exec"), scope)
    assert set(scope["res"].row()) == {"clean", "fgsm", "pgd-20", "cw-20", "worst case"}


def test_bfloat16_images_are_read_as_float32(own, digits):
    _, model, _ = own
    x = digits.test.x[:20]
    a = robustlab.evaluate_model(model, x.to(torch.bfloat16), digits.test.y[:20], "linf:0.1", ["fgsm"], flags=False,
                                 quiet=True)
    b = robustlab.evaluate_model(model, x.to(torch.bfloat16).float(), digits.test.y[:20], "linf:0.1", ["fgsm"],
                                 flags=False, quiet=True)
    np.testing.assert_array_equal(a.per_sample["fgsm"], b.per_sample["fgsm"])
