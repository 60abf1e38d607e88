"""Report sections find runs by the role the study config gives them: renaming a run keeps its rows, a
role no run plays is named in the report, a role is no part of a run's config, and the configs declare the
roles their sections read."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from robustlab.config import load_study, study_roles, study_runs
from robustlab.errors import RobustlabError
from robustlab.report import SECTIONS
from robustlab.report.roles import check_roles, section_roles
from robustlab.study import run_study

ROOT = Path(__file__).resolve().parents[1]
RENAMED = {"standard": "zz_natural", "pgd_at": "zz_madry", "alp": "zz_kannan", "aalp": "zz_adaptive",
           "dat": "zz_discrete"}
TRACK = [{"name": "fisher_tracking", "n": 20, "anchors": 4, "partners": 4}]


def tiny_study(tmp: Path, labels: dict[str, str]) -> Path:
    """A tiny study for the aalp, dat and shi sections, its runs labelled by `labels` (role -> label)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp / "tiny.npz", x=(d.images[:300] / 16.0).astype(np.float32)[:, None], y=d.target[:300])
    vq = {"ch": 4, "z_channels": 4, "num_groups": 2, "codebook_size": 16, "code_dim": 2, "epochs": 1}
    config = {
        "name": "tiny", "dataset": {"name": "npz", "path": str(tmp / "tiny.npz")},
        "model": {"name": "small_cnn", "width": 4, "hidden": 16}, "threat": "linf:0.2",
        "train": {"epochs": 1, "batch_size": 64, "select": {"by": "clean", "max_samples": 40}},
        "eval": {"suite": ["fgsm", "pgd-5", "cw-5"], "max_samples": 60, "flags": {"enabled": False}},
        "runs": [{"label": labels["standard"], "role": "standard", "method": "standard", "callbacks": TRACK},
                 {"label": labels["pgd_at"], "role": "pgd_at", "method": {"name": "pgd_at", "attack_steps": 2},
                  "callbacks": TRACK},
                 {"label": labels["alp"], "role": "alp", "method": {"name": "alp", "attack_steps": 2}},
                 {"label": labels["aalp"], "role": "aalp", "method": {"name": "aalp", "attack_steps": 2}},
                 {"label": labels["dat"], "group": "dat", "role": "dat", "method": {"name": "dat", "vq": vq}}],
        "sections": [{"name": "aalp", "groups": ["main"], "analysis_n": 40, "gradcam_n": 2}, "dat",
                     {"name": "shi", "fisher_n": 20, "anchors": 4, "partners": 4}],
    }
    path = tmp / f"tiny_{labels['standard']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sections_of(report: Path) -> str:
    """The report from its first paper section on (the header and the runs' timings differ between runs)."""
    text = report.read_text()
    return text[text.index("## AALP"):]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):  # trains five runs: for the slow tests only
    """(report of the tiny study, report of the same runs under renamed labels), both from reused runs."""
    tmp = tmp_path_factory.mktemp("roles")
    original = tiny_study(tmp, {role: role for role in RENAMED})
    run_study(original, out_root=tmp / "a", quiet=True, jobs=1)
    first = run_study(original, out_root=tmp / "a", quiet=True, jobs=1)  # every run reused, as the renamed study's
    renamed = tiny_study(tmp, RENAMED)
    for role, label in RENAMED.items():  # the same trained runs under their new names (labels are not fingerprinted)
        shutil.copytree(tmp / "a" / "tiny" / role, tmp / "b" / "tiny" / label)
    second = run_study(renamed, out_root=tmp / "b", quiet=True, jobs=1)
    return first, second


@pytest.mark.slow
def test_renamed_runs_give_the_same_rows_under_their_new_labels(reports):
    first, second = reports
    assert "5 reused" in second.read_text()  # nothing retrained: the role did not change a fingerprint
    text = sections_of(second)
    for role, label in RENAMED.items():
        text = text.replace(label, role)
    assert text == sections_of(first)
    for needle in ("| alp | ", "| aalp | ", "| standard | standard |", "| pgd_at | pgd_at |", "| dat | dat |",
                   "**Fig. 4 (PGD-AT / TRADES have a smaller mean Fisher norm", "AALP beats ALP under PGD and CW"):
        assert needle in sections_of(first), needle


@pytest.mark.slow
def test_a_role_no_run_plays_is_named_in_the_section(reports):
    first, _ = reports
    aalp = sections_of(first).split("\n## ")[0]
    assert "Roles not played in this study: `standard_gd`, `pgd_at_gd`, `trades`, `aalp_gd`, `aalp_sw` (no run of " \
           "group `main` has them)" in aalp
    dat = sections_of(first).split("## DAT")[1].split("\n## ")[0]
    assert "Roles not played" not in dat and "| standard | standard |" in dat  # dat has all three


def test_a_section_without_its_runs_says_so(tmp_path):
    import torch

    from robustlab.report import StudyContext

    ctx = StudyContext(load_study(ROOT / "configs" / "digits.yaml"), tmp_path, [], torch.device("cpu"), quiet=True)
    for name, heading in (("dat", "## DAT"), ("scarl", "## SCARL"), ("zhu", "## Zhu"), ("aalp", "## AALP"),
                          ("shi", "## Shi")):
        text = SECTIONS.create(name, ctx)
        assert text.startswith(heading) and "Roles not played in this study: " in text, name


def section_groups(name: str, options: dict) -> tuple[str, ...]:
    """The groups a section reads its roles from: its `groups` option, else the option's default."""
    import inspect

    return tuple(options.get("groups", inspect.signature(SECTIONS.get(name)).parameters["groups"].default))


def study_yaml(tmp: Path, runs: list[dict], sections: list) -> Path:
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "dataset": "digits", "model": "small_cnn", "threat": "linf:0.2",
                                    "runs": runs, "sections": sections}))
    return path


def test_a_role_is_not_part_of_the_run_config(tmp_path):
    runs = [{"method": "standard"}, {"method": "pgd_at", "group": "x"}]
    plain = study_runs(load_study(study_yaml(tmp_path, runs, ["aalp"])))
    with_roles = [dict(r, role=role) for r, role in zip(runs, ("standard", "pgd_at"))]
    cast = load_study(study_yaml(tmp_path, with_roles, ["aalp"]))
    assert [cfg.fingerprint() for _, _, cfg in study_runs(cast)] == [cfg.fingerprint() for _, _, cfg in plain]
    assert study_roles(cast) == {"standard": "standard", "pgd_at": "pgd_at"}


def test_digits_fingerprints_do_not_see_the_roles(tmp_path):
    text = (ROOT / "configs" / "digits.yaml").read_text()
    stripped = re.sub(r"\n\s*role: \w+|, role: \w+", "", text)
    assert stripped != text and "role:" not in stripped
    (tmp_path / "digits.yaml").write_text(stripped)
    with_roles = study_runs(load_study(ROOT / "configs" / "digits.yaml"))
    without = study_runs(load_study(tmp_path / "digits.yaml"))
    assert [(label, cfg.fingerprint()) for label, _, cfg in with_roles] == \
           [(label, cfg.fingerprint()) for label, _, cfg in without]


@pytest.mark.parametrize("runs,message", [
    ([{"method": "standard", "role": "alp"}, {"method": "pgd_at", "role": "alp"}],
     "runs 'standard' and 'pgd_at' of group 'main' both have role 'alp'"),
    ([{"method": "standard", "role": "pgd at"}], "role='pgd at'; allowed: a name"),
    ([{"method": "standard", "role": 3}], "role=3; allowed: a name"),
])
def test_bad_roles_get_one_line(tmp_path, runs, message):
    with pytest.raises(RobustlabError, match=re.escape(message)):
        study_roles(load_study(study_yaml(tmp_path, runs, ["aalp"])))


def test_a_role_no_section_reads_fails_before_training(tmp_path):
    path = study_yaml(tmp_path, [{"method": "standard", "role": "standrad"}], [{"name": "aalp", "groups": ["main"]}])
    message = "run 'standard' has role 'standrad', which no report section reads. The roles the sections read: aalp: "
    with pytest.raises(RobustlabError, match=re.escape(message + "standard, standard_gd")):
        run_study(path, out_root=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs").exists()
    # a role some section reads stays valid when the study lists other sections (--set sections=[robustness])
    study = load_study(study_yaml(tmp_path, [{"method": "standard", "role": "standard"}], ["robustness"]))
    check_roles(study, study_roles(study))


EXPECTED_MISSING = {  # roles a section reads that no run of its groups plays, per config
    ("aalp_mnist", "aalp"): ["standard_gd", "pgd_at_gd"], ("aalp_cifar10", "aalp"): ["standard_gd", "pgd_at_gd"],
    ("aalp_svhn", "aalp"): [], ("aalp_digits", "aalp"): ["trades"], ("digits", "scarl"): [], ("digits", "dat"): [],
    ("digits", "shi"): [], ("shi_digits", "shi"): [],
    ("zhu_digits", "zhu"): ["mi_mlp_std", "mi_mlp_at", "wcmi_mlp_std", "wcmi_mlp_at", "e2e_std"],
    ("scarl_cifar10", "scarl"): [], ("shi_cifar10", "shi"): [],
    **{(f"zhu_{d}", "zhu"): [] for d in ("mnist", "fashion_mnist", "svhn", "cifar10")},
    # the real-data studies (docs/real_data.md): the CPU one leaves out what its budget cannot hold
    ("fashion_mnist", "aalp"): ["standard_gd", "pgd_at_gd", "aalp_gd", "aalp_sw"], ("fashion_mnist", "shi"): [],
    ("fashion_mnist", "scarl"): ["scarl"], ("fashion_mnist", "dat"): [],
    ("fashion_mnist", "zhu"): ["mi_mlp_std", "mi_mlp_at", "wcmi_mlp_std", "wcmi_mlp_at", "e2e_std", "e2e_at"],
    ("fashion_mnist_full", "aalp"): ["standard_gd", "pgd_at_gd"], ("fashion_mnist_full", "shi"): [],
    ("fashion_mnist_full", "scarl"): [], ("fashion_mnist_full", "dat"): [], ("fashion_mnist_full", "zhu"): [],
    ("mnist5k", "aalp"): ["standard_gd", "pgd_at_gd", "trades", "aalp_gd", "aalp_sw"],
}


def test_every_config_declares_the_roles_its_sections_read():
    seen = set()
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if "runs" not in yaml.safe_load(path.read_text()):
            continue  # a single-run config (dat_imagenet)
        study = load_study(path)
        runs, roles = study_runs(study), study_roles(study)
        check_roles(study, roles)
        groups = {label: group for label, group, _ in runs}
        for spec in study.sections:
            name, options = (spec, {}) if isinstance(spec, str) else (spec["name"], spec)
            if not section_roles(name):
                continue
            read = list(options.get("rv_roles", ())) if name == "zhu" else []
            wanted = [r for r in section_roles(name) if name != "zhu" or r not in ("standard", "pgd_at") or r in read]
            played = {roles[label] for label in roles if groups[label] in section_groups(name, options)}
            assert [r for r in wanted if r not in played] == EXPECTED_MISSING[(path.stem, name)], (path.stem, name)
            seen.add((path.stem, name))
    assert seen == set(EXPECTED_MISSING)


def test_docs_list_the_roles_each_section_reads():
    doc = (ROOT / "docs" / "report.md").read_text()
    names = [name for name in SECTIONS.names() if section_roles(name)]
    chunks = dict(re.findall(r"\n`(\w+)` \((.*?)(?=\n`\w+` \(|\n## )", doc, re.S))
    assert sorted(chunks) == sorted(names)
    for name in names:
        assert f"`groups` default `[{', '.join(section_groups(name, {}))}]`" in chunks[name], name
        for role in section_roles(name):
            assert f"`{role}`" in chunks[name], (name, role)
