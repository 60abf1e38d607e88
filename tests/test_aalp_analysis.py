"""AALP analyses (feature contribution, Grad-CAM, Consistent/Inconsistent sets, the ALP-by-set callback),
the paper configs, and the `aalp` report section end to end on a tiny study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab import models
from robustlab.analysis.consistency import SETS, paired_outputs, set_labels, set_statistics
from robustlab.analysis.contribution import feature_contribution, high_contribution_counts
from robustlab.analysis.gradcam import active_area, grad_cam
from robustlab.attacks import PGD
from robustlab.config import load_study, study_roles, study_runs
from robustlab.data import ImageDataset, Split
from robustlab.evaluate import EvalResult
from robustlab.registry import validate_kwargs
from robustlab.report import SECTIONS, RunRecord, StudyContext
from robustlab.train import build_run

ROOT = Path(__file__).resolve().parents[1]




def model(name="small_cnn", size=8, channels=1, seed=0, **kw):
    torch.manual_seed(seed)
    return models.create(name, 10, channels, size, (0.5,) * channels, (0.25,) * channels, **kw).eval()


def split(n=40, size=8, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, channels, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


# --- Consistent / Inconsistent sets ---------------------------------------------------------------------

def test_sets_partition_the_points_as_defined():
    m = model(width=8, hidden=64)
    data = split(60)
    with torch.no_grad():  # make about half the points clean-correct
        data.y[:30] = m(data.x[:30]).argmax(1)
    out = paired_outputs(m, data, PGD("linf:0.1", steps=3), batch_size=16)
    labels = set_labels(out["clean_correct"], out["adv_correct"])
    cc, ac = out["clean_correct"], out["adv_correct"]
    assert np.array_equal(labels == 0, cc & ac) and np.array_equal(labels == 1, cc & ~ac) and np.array_equal(labels == 2, ~cc)
    stats = set_statistics(out)
    assert sum(stats[s]["count"] for s in SETS) == 60 and sum(stats[s]["proportion"] for s in SETS) == pytest.approx(1.0)
    assert stats["consistent"]["count"] + stats["inconsistent"]["count"] == int(cc.sum()) > 0
    # the per-point values are what they claim to be
    with torch.no_grad():
        p = F.softmax(m(data.x), 1)[torch.arange(60), data.y].numpy()
    np.testing.assert_allclose(out["clean_conf"], p, rtol=1e-5)
    assert np.all(out["alp"] >= 0) and (out["alp"] > 0).any()


def test_set_statistics_on_a_hand_made_case():
    out = {"clean_correct": np.array([1, 1, 1, 0], bool), "adv_correct": np.array([1, 0, 0, 1], bool),
           "clean_conf": np.array([0.9, 0.6, 0.4, 0.1]), "adv_conf": np.array([0.8, 0.2, 0.0, 0.3]),
           "ce_clean": np.array([0.1, 0.5, 0.9, 2.0]), "ce_adv": np.array([0.3, 1.5, 2.9, 1.0]),
           "alp": np.array([0.5, 2.0, 4.0, 1.0])}
    s = set_statistics(out)
    assert s["consistent"] == {"count": 1, "proportion": 0.25, "clean_conf": 0.9, "adv_conf": 0.8, "ce": pytest.approx(0.2), "alp": 0.5}
    assert s["inconsistent"]["count"] == 2 and s["inconsistent"]["alp"] == pytest.approx(3.0)
    assert s["inconsistent"]["ce"] == pytest.approx((0.5 + 1.5 + 0.9 + 2.9) / 4)
    assert s["clean_wrong"]["count"] == 1
    empty = set_statistics({k: v[:1] for k, v in out.items()})
    assert empty["inconsistent"] == {"count": 0, "proportion": 0.0, "clean_conf": None, "adv_conf": None, "ce": None, "alp": None}


# --- Grad-CAM -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,size,channels,kw", [("small_cnn", 8, 1, {"width": 4, "hidden": 16}), ("lenet", 28, 1, {}),
                                                    ("resnet9", 32, 3, {"width": 4})])
def test_grad_cam_maps_have_the_input_shape_and_are_non_negative(name, size, channels, kw):
    m = model(name, size, channels, **kw)
    data = split(5, size, channels)
    cams = grad_cam(m, data.x, data.y)
    assert cams.shape == (5, size, size)
    assert (cams >= 0).all() and torch.isfinite(cams).all()
    assert all(p.grad is None for p in m.parameters())


def test_grad_cam_matches_a_hand_computed_map():
    m = model("small_cnn", 8, 1, width=2, hidden=8)
    x, c = split(3).x, torch.tensor([1, 4, 7])
    fmap = m.forward_map(x).detach().requires_grad_(True)
    z = m.forward_head(m.neck(fmap))
    (g,) = torch.autograd.grad(z[torch.arange(3), c].sum(), fmap)
    expected = F.relu((g.mean((2, 3), keepdim=True) * fmap).sum(1, keepdim=True))
    expected = F.interpolate(expected, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(grad_cam(m, x, c), expected.detach())


def test_active_area_of_known_maps():
    cams = torch.zeros(2, 4, 4)
    cams[0, 0, :2] = 1.0  # 2 of 16 pixels at the maximum
    cams[1] = 0.0  # an all-zero map counts as no area
    assert active_area(cams) == pytest.approx((2 / 16 + 0) / 2)


# --- feature contribution -----------------------------------------------------------------------------

def test_feature_contribution_is_the_mean_absolute_feature_gradient():
    m = model(width=4, hidden=16)
    data = split(30)
    with torch.no_grad():
        a = m.forward_features(data.x)
        p = F.softmax(m.forward_head(a), 1)
    grad = (p - F.one_hot(data.y, 10).float()) @ m.head.weight
    torch.testing.assert_close(feature_contribution(m, data, batch_size=7), grad.abs().mean(0), rtol=1e-5, atol=1e-7)


def test_high_contribution_counts_use_a_pooled_threshold():
    tau, counts = high_contribution_counts({"a": np.arange(10.0), "b": np.arange(10.0) + 100}, quantile=0.5)
    assert 9 < tau < 100 and counts == {"a": 0, "b": 10}


# --- paper configs ------------------------------------------------------------------------------------

def fake_dataset(channels: int, size: int) -> ImageDataset:
    s = split(20, size, channels)
    return ImageDataset("fake", s, s, s, [str(i) for i in range(10)], (0.5,) * channels, (0.25,) * channels)


@pytest.mark.parametrize("config,channels,size", [("aalp_mnist", 1, 28), ("aalp_svhn", 3, 32), ("aalp_cifar10", 3, 32)])
def test_paper_configs_hold_the_seven_table2_rows_and_build(config, channels, size):
    study = load_study(ROOT / "configs" / f"{config}.yaml")
    runs = study_runs(study)
    methods = {label: cfg.method.name for label, _, cfg in runs}
    table2 = {"raw": "standard", "madry_adv": "pgd_at", "alp": "alp", "trades": "trades", "aalp_gd": "aalp_gd",
              "aalp_sw": "aalp_sw", "aalp": "aalp"}
    assert {k: methods[k] for k in table2} == table2
    ds = fake_dataset(channels, size)
    for label, _, cfg in runs:
        _, _, method, callbacks = build_run(cfg, dataset=ds)
        assert cfg.train.optimizer.name == "adam" and cfg.eval.suite == "paper"
        if method.train_attack is not None:
            assert method.train_attack.step == pytest.approx(cfg.eval.step)
        assert [type(c).__name__ for c in callbacks] == (["ALPLossBySet"] if label in ("alp", "aalp") else [])
    for spec in study.sections:
        if isinstance(spec, dict):
            options = {k: v for k, v in spec.items() if k != "name"}
            validate_kwargs(spec["name"], SECTIONS.get(spec["name"]), options, skip=("ctx",))


def test_paper_attack_settings():
    expected = {"aalp_mnist": ("linf:0.3", 40, 0.01, 1e-4), "aalp_svhn": ("linf:12/255", 10, 3 / 255, 1e-4),
                "aalp_cifar10": ("linf:8/255", 7, 2 / 255, 1e-5)}
    for config, (threat, steps, step, lr) in expected.items():
        for _, _, cfg in study_runs(load_study(ROOT / "configs" / f"{config}.yaml")):
            assert cfg.threat == threat and cfg.train.optimizer.lr == lr
            if cfg.method.name != "standard":
                assert cfg.method.options["attack_steps"] == steps and cfg.method.options["attack_step"] == pytest.approx(step)


def test_the_aalp_digits_study_is_the_block_that_left_the_default_study():
    """configs/aalp_digits.yaml: the eight runs of one budget, paired with the default study's `alp` row."""
    study = load_study(ROOT / "configs" / "aalp_digits.yaml")
    runs = study_runs(study)
    assert {group for _, group, _ in runs} == {"aalp"} and list(study.sections) == ["aalp"]
    block = {label: cfg for label, _, cfg in runs}
    methods = sorted((cfg.method.name, cfg.method.options.get("guided_dropout", False)) for cfg in block.values())
    assert methods == [("aalp", False), ("aalp_gd", False), ("aalp_sw", False), ("alp", False), ("pgd_at", False),
                       ("pgd_at", True), ("standard", False), ("standard", True)]
    for cfg in block.values():  # one model, training budget and evaluation for the whole block
        assert cfg.model == block["aalp"].model and cfg.train == block["aalp"].train and cfg.eval == block["aalp"].eval
    # the default study's paper protocol (its headline runs add AutoAttack on the whole test split)
    default = load_study(ROOT / "configs" / "digits.yaml")
    main = {label: cfg for label, _, cfg in study_runs(default)}
    main_eval = main["alp"].eval
    assert [x.suite for x in main_eval.extra_suites] == ["autoattack"] and main_eval.extra_suites[0].max_samples is None
    assert block["aalp"].eval.model_copy(update={"extra_suites": main_eval.extra_suites}) == main_eval
    assert block["aalp"].method.options["alpha"] == main["alp"].method.options.get("lam", 0.5)
    assert "aalp" not in default.sections and not set(block) & set(main)


# --- end to end: callback + section on a tiny study -------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from sklearn.datasets import load_digits

    from robustlab.study import run_study

    tmp = tmp_path_factory.mktemp("aalp_study")
    d = load_digits()
    np.savez(tmp / "tiny.npz", x=(d.images[:240] / 16.0).astype(np.float32)[:, None], y=d.target[:240])
    cfg = (ROOT / "configs" / "aalp_digits.yaml").read_text()
    config = tmp / "tiny.yaml"
    config.write_text(cfg)
    sets = [f"dataset={{name: npz, path: {tmp / 'tiny.npz'}}}", "model={name: small_cnn, width: 4, hidden: 32}",
            "train.epochs=2", "train.batch_size=64", "eval.suite=[fgsm, pgd-10, cw-10]", "eval.batch_size=100", "eval.extra_suites=[]"]
    runs = "standard_ref,standard_gd,pgd_at_ref,pgd_at_gd,alp_ref,aalp_gd,aalp_sw,aalp"
    report = run_study(config, overrides=sets, out_root=tmp / "runs", quiet=True, only=runs.split(","))
    return report, runs.split(",")


def records_of(report: Path, labels: list[str], rename: dict[str, str] | None = None) -> tuple:
    """(study, RunRecords of `labels` from the tiny study's run directories, each under rename[label] if given)."""
    study = load_study(report.parent.parent.parent / "tiny.yaml")
    roles = study_roles(study)
    records = [RunRecord((rename or {}).get(label, label), group, cfg, report.parent / label,
                         eval=EvalResult.load(report.parent / label), role=roles.get(label))
               for label, group, cfg in study_runs(study) if label in labels]
    return study, records


def test_alp_by_set_callback_writes_the_per_epoch_curves(tiny_study):
    report, _ = tiny_study
    for label in ("alp_ref", "aalp"):
        res = json.loads((report.parent / label / "analysis" / "alp_loss_by_set.json").read_text())
        assert res["epochs"] == [1, 2] and res["split"] == "val"
        assert sum(res["counts"].values()) <= res["n"]
        for s in ("consistent", "inconsistent"):
            assert len(res[s]) == 2 and all(v is None or v >= 0 for v in res[s])
        metrics = [json.loads(line) for line in (report.parent / label / "metrics.jsonl").read_text().splitlines()]
        assert all("val_alp" in m for m in metrics)


def test_aalp_section_tables_figures_and_claims(tiny_study):
    report, _ = tiny_study
    text = report.read_text()
    for heading in ("Table 2 analogue", "Table 3 analogue", "Consistent and Inconsistent sets", "Fig. 4",
                    "Feature contribution", "Comparison with the paper's claims"):
        assert heading in text
    assert "AutoAttack: not available" in text
    assert "| alp_ref → aalp_gd |" in text and "| pgd_at_ref → pgd_at_gd |" in text
    assert "| ours (npz) |" in text  # Table 4 analogue: the data set the runs were trained on
    for fig in ("aalp_consistency_scatter", "aalp_alp_loss_by_set", "aalp_contribution_clean", "aalp_contribution_adv", "aalp_gradcam"):
        assert f"figures/{fig}.png" in text and (report.parent / "figures" / f"{fig}.png").stat().st_size > 5000


def test_aalp_section_shows_autoattack_when_the_evaluation_has_it(tiny_study):
    report, labels = tiny_study
    study, records = records_of(report, labels)
    for r in records:
        robust = np.zeros(10, dtype=bool)
        robust[: 3 if r.label == "aalp" else 1] = True
        r.extra["autoattack"] = EvalResult(threat=r.eval.threat, suite=["autoattack"], n=10, clean=1.0,
                                           attacks={"autoattack": robust.mean()}, worst_case=robust.mean(), step=0.05,
                                           per_sample={"clean": np.ones(10, dtype=bool), "autoattack": robust})
    ctx = StudyContext(study, report.parent, records, torch.device("cpu"), quiet=True)
    text = SECTIONS.create("aalp", ctx)
    assert "| run | n | paper worst case | AutoAttack |" in text
    assert "AutoAttack: not available" not in text
    assert "AutoAttack (first 10 test points): ALP 10.0%, AALP 30.0%, +20.0" in text


def test_aalp_section_reads_runs_by_role_so_renaming_keeps_its_rows(tiny_study):
    """The same runs under other labels give the same section, row for row, under the new labels; the role
    no run plays (trades) is named."""
    report, labels = tiny_study
    rename = {label: f"zz{i}" for i, label in enumerate(labels)}
    texts = []
    for names in (None, rename):
        study, records = records_of(report, labels, names)
        texts.append(SECTIONS.create("aalp", StudyContext(study, report.parent, records, torch.device("cpu"), quiet=True)))
    renamed = texts[1]
    for label, new in sorted(rename.items(), key=lambda kv: -len(kv[1])):  # zz10 before zz1
        renamed = renamed.replace(new, label)
    assert renamed == texts[0]
    assert "| zz4 | " in texts[1] and "| zz2 → zz3 |" in texts[1] and "| pgd_at_ref → pgd_at_gd |" in texts[0]
    assert "Roles not played in this study: `trades` (no run of group `aalp` has it)" in texts[0]


def test_alp_by_set_callback_continues_after_a_resume(tmp_path):
    from robustlab import methods
    from robustlab.config import TrainConfig
    from robustlab.train import CALLBACKS, Trainer

    ds = fake_dataset(1, 8)

    def fit(epochs: int, resume: bool) -> np.ndarray:
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=epochs, batch_size=10, select={"every": 1, "max_samples": 10})
        trainer = Trainer(models.for_dataset("small_cnn", ds, width=4, hidden=16), methods.create("alp", threat="linf:0.1", attack_steps=2),
                          ds, cfg, tmp_path, callbacks=[CALLBACKS.create("alp_loss_by_set", n=12)], quiet=True)
        trainer.fit(resume=resume)
        with np.load(tmp_path / "analysis" / "alp_loss_by_set.npz") as saved:
            return saved["alp"]

    first = fit(1, resume=False)
    both = fit(2, resume=True)
    assert first.shape == (1, 12) and both.shape == (2, 12)
    np.testing.assert_array_equal(both[0], first[0])
    assert json.loads((tmp_path / "analysis" / "alp_loss_by_set.json").read_text())["epochs"] == [1, 2]
