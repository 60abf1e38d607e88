"""Robust representation learning (Zhu et al., ICML 2020, arXiv 2002.11798): the mi / wcmi objectives, downstream
classifiers on a frozen encoder (init_from), and the vulnerability / saliency analyses on real runs."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from robustlab import checkpoint as ckpt
from robustlab import data, methods, models
from robustlab.cli import main as cli
from robustlab.config import TrainConfig, make_run_config
from robustlab.errors import RobustlabError
from robustlab.train import Trainer, train_run

TINY = {"channels": [8, 16, 32], "fc": 32, "z_dim": 16}
CRITIC = {"hidden": 16, "width": [4, 8]}
ENC_TRAIN = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 2e-3, "weight_decay": 0},
             "schedule": {"name": "constant"}, "select": {"by": "last"}}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def small(digits):
    return dataclasses.replace(digits, train=digits.train.head(192), val=digits.val.head(32))


def _fit(ds, method, run_dir, *, epochs=1, resume=False, **train):
    torch.manual_seed(0)
    model = models.for_dataset("basic_encoder", ds, **TINY)
    cfg = TrainConfig(**{**ENC_TRAIN, "epochs": epochs, **train})
    trainer = Trainer(model, method, ds, cfg, run_dir, quiet=True)
    return trainer, trainer.fit(resume=resume)


def _wcmi(**kw):
    return methods.create("wcmi", threat="linf:0.2", critic_options=CRITIC, attack_steps=2, **kw)


def _state(trainer):
    return {**{f"model.{k}": v for k, v in trainer.model.state_dict().items()},
            **{f"method.{k}": v for k, v in trainer.method.state_dict().items()}}


# --- the objectives ---------------------------------------------------------------------------------

def test_wcmi_ignores_labels_and_trains_its_critic(small, tmp_path):
    a, _ = _fit(small, _wcmi(), tmp_path / "a")
    shuffled = dataclasses.replace(small, train=dataclasses.replace(small.train, y=small.train.y.flip(0)))
    b, _ = _fit(shuffled, _wcmi(), tmp_path / "b")
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys() and any(k.startswith("method.estimator.critic.") for k in sa)
    torch.testing.assert_close(sa, sb, rtol=0, atol=0, equal_nan=True)  # labels never used
    # the critic is trained and checkpointed with the model
    saved = ckpt.load_state(tmp_path / "a" / ckpt.STATE_FILE)["method"]
    assert saved.keys() == a.method.state_dict().keys()
    torch.manual_seed(0)
    fresh = _wcmi()
    fresh.build_parts(models.for_dataset("basic_encoder", small, **TINY), small)
    w = "estimator.critic.global_proj.block.0.weight"
    assert not torch.equal(fresh.state_dict()[w], a.method.state_dict()[w])


def test_wcmi_is_the_mi_objective_at_the_worst_case_batch(small):
    from robustlab.methods import StepContext
    from robustlab.threat import ThreatModel

    torch.manual_seed(0)
    model = models.for_dataset("basic_encoder", small, **TINY).train()
    wcmi, mi = _wcmi(), methods.create("mi", critic_options=CRITIC)
    wcmi.build_parts(model, small)
    mi.estimator = wcmi.estimator  # the same critic
    x, y = small.train.x[:64], small.train.y[:64]
    ctx = StepContext(generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([*model.parameters(), *mi.parameters()], lr=2e-3)
    for _ in range(20):  # a critic that has learnt something, so that the attack has an estimate to lower
        loss, _ = mi.loss(model, x, y, ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_adv = wcmi.inputs(model, x, ctx)
    assert ThreatModel.parse("linf:0.2").contains(x_adv - x).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():  # the attack scores in eval mode, keeping its best iterate (the clean batch included)
        model.eval(), wcmi.estimator.eval()
        clean, worst = (wcmi.estimator(b, model.forward_features(b)).objective.item() for b in (x, x_adv))
        model.train(), wcmi.estimator.train()
    assert worst < clean - 0.03, (worst, clean)  # measured: −0.097 vs −0.033 nats
    torch.testing.assert_close(wcmi.loss(model, x, y, ctx)[0], mi.loss(model, x_adv, y, ctx)[0])


def test_critic_initialisation_follows_the_run_seed(small, tmp_path):
    critics = []
    for i, seed in enumerate((0, 0, 1)):
        torch.manual_seed(100 + i)  # whatever the global RNG holds before
        model = models.for_dataset("basic_encoder", small, **TINY)
        trainer = Trainer(model, _wcmi(), small, TrainConfig(**{**ENC_TRAIN, "seed": seed}), tmp_path / str(i), quiet=True)
        critics.append(trainer.method.estimator.critic.state_dict()["global_proj.block.0.weight"])
    assert torch.equal(critics[0], critics[1]) and not torch.equal(critics[0], critics[2])


def test_mi_training_raises_the_estimate(small, tmp_path):
    method = methods.create("mi", critic_options=CRITIC)
    _, result = _fit(small, method, tmp_path / "mi", epochs=3)
    curve = [r["train_mi"] for r in result.history]
    assert curve[-1] > curve[0] + 0.3


def test_wcmi_resume_matches_an_uninterrupted_run(small, tmp_path):
    straight, _ = _fit(small, _wcmi(), tmp_path / "straight", epochs=2)
    _fit(small, _wcmi(), tmp_path / "resumed", epochs=1)
    resumed, _ = _fit(small, _wcmi(), tmp_path / "resumed", epochs=2, resume=True)
    torch.testing.assert_close(_state(resumed), _state(straight), rtol=0, atol=0, equal_nan=True)


def test_unsupervised_objectives_select_the_last_epoch(small, tmp_path):
    trainer, result = _fit(small, methods.create("mi", critic_options=CRITIC), tmp_path / "auto", select={"by": "auto"})
    assert trainer.select_by == "last" and result.best_epoch == 1
    with pytest.raises(RobustlabError, match="unsupervised.*select.by='clean'"):
        _fit(small, methods.create("mi", critic_options=CRITIC), tmp_path / "clean", select={"by": "clean"})


def test_bad_options_fail_before_training():
    with pytest.raises(RobustlabError, match="hiden"):
        methods.create("mi", critic_options={"hiden": 8})
    with pytest.raises(RobustlabError, match="ma_rate"):
        methods.create("wcmi", threat="linf:0.1", bound="infonce", ma_rate=0.01)
    with pytest.raises(RobustlabError, match="threat"):
        methods.create("wcmi")


# --- the encoder model and downstream classifiers -----------------------------------------------

def test_basic_encoder_shapes_and_frozen_parts(digits):
    lin = models.for_dataset("basic_encoder", digits)
    assert lin.feature_dim == 64 and lin.body(torch.rand(2, 1, 8, 8)).shape == (2, 256, 1, 1)
    mlp = models.for_dataset("basic_encoder", digits, classifier="mlp", frozen_encoder=True).train()
    assert mlp.feature_dim == 200 and mlp.neck.encoder(mlp.body(torch.rand(3, 1, 8, 8))).shape == (3, 64)
    assert models.create("basic_encoder", 10, 1, 28).neck.encoder[1].in_features == 2304  # as in the code for MNIST
    frozen = [m for part in mlp.encoder_parts() for m in part.modules()]
    assert all(not m.training for m in frozen) and mlp.neck.classifier.training and mlp.head.training
    assert not any(p.requires_grad for part in mlp.encoder_parts() for p in part.parameters())
    assert all(p.requires_grad for p in mlp.head.parameters())


def _run_config(method, callbacks=(), **model):
    return make_run_config({"dataset": "digits", "model": {"name": "basic_encoder", **TINY, **model}, "method": method,
                            "threat": "linf:0.2", "train": {**ENC_TRAIN, "epochs": 1}, "callbacks": list(callbacks)})


@pytest.fixture(scope="module")
def encoder_and_downstream(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    train_run(_run_config({"name": "mi", "critic_options": CRITIC}), root / "enc", dataset=digits, quiet=True)
    down = _run_config({"name": "pgd_at", "attack_steps": 2}, [{"name": "init_from", "run": "enc"}], frozen_encoder=True)
    train_run(down, root / "down", dataset=digits, quiet=True)
    return root


def test_downstream_trains_only_the_classifier_on_the_encoder(encoder_and_downstream, tmp_path):
    root = encoder_and_downstream
    enc, down = ckpt.load_weights(root / "enc" / "model"), ckpt.load_weights(root / "down" / "model")
    shared = [k for k in enc if k.startswith(("normalize.", "body.", "neck.encoder."))]
    assert any("running_mean" in k for k in shared)  # BatchNorm statistics included, unchanged by training
    for k in shared:
        assert torch.equal(enc[k], down[k]), k
    assert not torch.equal(enc["head.weight"], down["head.weight"])
    meta = ckpt.load_meta(root / "down")
    assert meta["init_from"]["checkpoint"].endswith("enc/model") and meta["init_from"]["epoch"] == 1
    # the downstream run is self-contained: it reloads without the encoder run
    copy = tmp_path / "down"
    shutil.copytree(root / "down", copy)
    model, _ = ckpt.load_model(copy)
    x = torch.rand(4, 1, 8, 8)
    reference, _ = ckpt.load_model(root / "down")
    assert torch.equal(model(x), reference(x))


def test_init_from_errors(digits, encoder_and_downstream, tmp_path):
    cfg = _run_config("standard", [{"name": "init_from", "run": "no_such_encoder"}], frozen_encoder=True)
    with pytest.raises(RobustlabError, match="init_from: run 'no_such_encoder' has no checkpoint"):
        train_run(cfg, tmp_path / "down", dataset=digits, quiet=True)
    enc = str(encoder_and_downstream / "enc")  # a path works as well as a sibling label, but the widths differ here
    wider = _run_config("standard", [{"name": "init_from", "run": enc}], frozen_encoder=True, fc=48)
    with pytest.raises(RobustlabError, match="neck.encoder.1.weight.*architectures differ"):
        train_run(wider, tmp_path / "wider", dataset=digits, quiet=True)


# --- analyses on a trained run through the CLI ---------------------------------------------------

def test_vulnerability_and_saliency_from_the_cli(encoder_and_downstream, capsys):
    run = encoder_and_downstream / "down"
    args = ["analyze", str(run), "--what", "vulnerability,saliency", "--quiet", "--set", "layer=logits", "--set", "seeds=2",
            "--set", "epochs=1", "--set", "max_train=128", "--set", "max_test=64", "--set", "batch_size=32",
            "--set", "attack_steps=2", "--set", "critic_options={hidden: 16, width: [4, 8]}", "--set", "n=4"]
    assert cli(args) == 0
    res = json.loads((run / "analysis" / "vulnerability.json").read_text())
    assert res["layer"] == "logits" and res["threat"] == "linf:0.2" and res["settings"]["seeds"] == 2
    for key in ("normal_mi", "worst_mi", "rv", "robust_accuracy_bound"):
        assert len(res[key]["values"]) == 2 and all(math.isfinite(v) for v in res[key]["values"])
    assert res["rv"]["values"] == pytest.approx([a - b for a, b in zip(res["normal_mi"]["values"], res["worst_mi"]["values"])])
    sal = json.loads((run / "analysis" / "saliency.json").read_text())
    assert (run / "figures" / "saliency.png").stat().st_size > 1000
    assert 0 <= sal["alignment_mean"] <= 1 and 0 <= sal["background_share_mean"] <= 1
    assert cli(["analyze", str(run), "--what", "vulnerability", "--quiet", "--set", "layer=pixels"]) == 2
    assert "layer" in capsys.readouterr().err


def test_saliency_measures():
    from robustlab.analysis.saliency import alignment, background_share

    x = torch.zeros(2, 1, 8, 8)
    x[:, :, 2:6, 3:5] = 1.0  # a bright stroke on a dark background
    on_stroke, off_stroke = x.clone(), 1.0 - x
    assert alignment(x, on_stroke).tolist() == pytest.approx([1.0, 1.0])
    assert alignment(x, -on_stroke).tolist() == pytest.approx([1.0, 1.0])  # the sign does not matter
    assert alignment(x, off_stroke).tolist() == pytest.approx([0.0, 0.0])
    assert background_share(x, on_stroke).tolist() == [0.0, 0.0]
    assert background_share(x, off_stroke).tolist() == pytest.approx([1.0, 1.0])


# --- the study section ----------------------------------------------------------------------------

@pytest.mark.slow
def test_zhu_section_of_the_digits_study(tmp_path):
    from robustlab.study import run_study

    labels = ["standard", "zhu_enc_mi", "zhu_enc_wcmi", "zhu_mi_std", "zhu_mi_at", "zhu_wcmi_std", "zhu_wcmi_at", "zhu_e2e_at"]
    report = run_study("configs/zhu_digits.yaml", overrides=["train.epochs=2"], out_root=tmp_path, quiet=True, only=labels)
    text = report.read_text()
    section = text[text.index("## Zhu et al."):]
    for needle in ("| robust (worst-case MI) | robust, linear (pgd_at) |", "Against the paper's claims", "### Representation vulnerability",
                   "| `standard` | standard |", "zhu_saliency.png"):
        assert needle in section, needle
    assert (tmp_path / "zhu_digits" / "figures" / "zhu_saliency.png").exists()


@pytest.mark.parametrize("name,shape", [("mnist", (1, 28)), ("fashion_mnist", (1, 28)), ("svhn", (3, 32)), ("cifar10", (3, 32))])
def test_paper_configs_build(name, shape):
    from robustlab.config import load_study, study_roles, study_runs
    from robustlab.data import ImageDataset, Split
    from robustlab.analysis import ANALYSES
    from robustlab.registry import validate_kwargs
    from robustlab.train import build_run

    c, s = shape
    split = Split(torch.rand(4, c, s, s), torch.arange(4))
    fake = ImageDataset(name, split, split, split, [str(i) for i in range(10)], (0.0,) * c, (1.0,) * c)
    study = load_study(f"configs/zhu_{name}.yaml")
    runs = study_runs(study)
    assert {"enc_mi", "enc_wcmi", "mi_linear_at", "wcmi_mlp_std", "e2e_at"} <= {label for label, _, _ in runs}
    for _, _, cfg in runs:
        build_run(cfg, dataset=fake)  # every model, method and callback option is valid
    (zhu,) = [spec for spec in study.sections if isinstance(spec, dict) and spec["name"] == "zhu"]
    validate_kwargs("vulnerability", ANALYSES.get("vulnerability"), zhu["rv"], skip=("ctx",))
    assert set(zhu["rv_roles"]) <= set(study_roles(study).values())  # every run the RV table reads plays its role
