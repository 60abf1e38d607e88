"""The DAT study end to end on a tiny budget: a dat run beside a standard run, the `dat` report section
(tables, figures, the claim check) and `robustlab vq train` from the command line."""

from __future__ import annotations

from pathlib import Path

import yaml

from robustlab.cli import main
from robustlab.study import run_study


def test_dat_section_in_a_tiny_study(tmp_path):
    config = {
        "name": "tiny", "dataset": "digits", "model": {"name": "small_cnn", "width": 4, "hidden": 16}, "threat": "linf:0.2",
        "train": {"epochs": 1, "batch_size": 128, "select": {"by": "clean", "max_samples": 40}},
        "eval": {"suite": ["fgsm", "pgd-5"], "max_samples": 60},
        # AutoAttack on different numbers of points: the table names each cell's n
        "runs": [{"method": "standard", "role": "standard", "eval": {"extra_suites": [{"suite": "autoattack", "max_samples": 30}]}},
                 {"label": "dat", "group": "dat", "role": "dat", "method": {"name": "dat", "vq": {"ch": 4, "z_channels": 4, "num_groups": 2,
                                                                                  "codebook_size": 16, "code_dim": 2, "epochs": 1}},
                  "eval": {"extra_suites": [{"suite": "autoattack", "max_samples": 20}]}}],
        "sections": ["dat"],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    report = run_study(path, out_root=tmp_path / "runs", quiet=True).read_text()
    assert "## DAT" in report and "| dat | dat |" in report and "mCE" in report
    assert "**Our runs**" in report and "verdict on digits, this seed" in report
    table = report[report.index("| run | method | clean |"):]
    assert "| AutoAttack (n) |" in table.splitlines()[0]
    assert " (30) |" in table.splitlines()[2] and " (20) |" in table.splitlines()[3]
    figures = tmp_path / "runs" / "tiny" / "figures"
    for name in ("dat_vq_reconstructions.png", "dat_corruption_severity.png", "dat_corruption_bars.png", "dat_corruption_examples.png"):
        assert (figures / name).stat().st_size > 1000
    cached = tmp_path / "runs" / "tiny" / "standard" / "analysis" / "corruption.json"
    assert cached.exists() and '"n": 60' in cached.read_text()
    # the section finds its runs by role: the same runs under other labels give the same section
    out = tmp_path / "runs" / "tiny"
    section = _section_under_labels(path, out, {"standard": "standard", "dat": "dat"})
    renamed = _section_under_labels(path, out, {"standard": "zz_base", "dat": "zz_discrete"})
    assert "| zz_base | standard |" in renamed and "| zz_discrete | dat |" in renamed
    assert renamed.replace("zz_base", "standard").replace("zz_discrete", "dat") == section
    assert "Roles not played in this study: `pgd_at` (no run of groups `dat`, `main` has it)" in report


def _section_under_labels(config: Path, out_dir: Path, rename: dict[str, str]) -> str:
    """The dat section rebuilt from the study's run directories, each run under rename[label]."""
    import torch

    from robustlab.config import load_study, study_roles, study_runs
    from robustlab.evaluate import EvalResult
    from robustlab.report import SECTIONS, RunRecord, StudyContext

    study = load_study(config)
    roles = study_roles(study)
    records = [RunRecord(rename[label], group, cfg, out_dir / label, eval=EvalResult.load(out_dir / label),
                         reused=True, role=roles[label]) for label, group, cfg in study_runs(study)]
    return SECTIONS.create("dat", StudyContext(study, out_dir, records, torch.device("cpu"), quiet=True))


def test_vq_train_command(tmp_path, capsys):
    out = tmp_path / "vq"
    assert main(["vq", "train", "--out", str(out), "--epochs", "1", "--set", "ch=4", "--set", "z_channels=4", "--set", "num_groups=2",
                 "--quiet"]) == 0
    assert "val PSNR" in capsys.readouterr().out
    assert (out / "vq.safetensors").exists() and (out / "reconstructions.png").exists()
    assert main(["vq", "eval", str(out), "--n", "20", "--quiet"]) == 0
    assert '"psnr"' in capsys.readouterr().out
    assert main(["vq", "train", "--out", str(out), "--set", "codebook=4"]) == 2  # unknown option: a user error


def test_imagenet_recipe_config_is_valid():
    from robustlab import methods
    from robustlab.config import load_yaml, make_run_config

    path = Path(__file__).resolve().parents[1] / "configs" / "dat_imagenet.yaml"
    cfg = make_run_config(load_yaml(path), str(path))
    method = methods.create(cfg.method.name, threat=cfg.threat_model, **cfg.method.options)
    assert method.train_attack.threat.eps == 0.1 and method.mixing["cutmix_alpha"] == 1.0
    assert cfg.train.optimizer.name == "adamw" and cfg.train.epochs == 300
