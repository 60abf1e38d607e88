"""Studies: report, reuse of finished runs, resume of interrupted ones, stale runs moved aside."""

import json
from pathlib import Path

import pytest

from robustlab.study import run_study

MINI = """
name: mini
dataset: digits
model: {name: small_cnn, width: 8, hidden: 32}
threat: linf:0.2
train: {epochs: 2, batch_size: 128}
eval: {suite: quick, max_samples: 60}
runs:
  - method: standard
  - method: {name: trades, attack_steps: 2}
"""


def test_mini_study_writes_report_and_reuses_runs(tmp_path):
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(MINI)
    report = run_study(cfg, out_root=tmp_path / "runs", quiet=True)
    text = report.read_text()
    assert "| standard |" in text and "| trades |" in text and "worst case" in text
    for fig in ("robustness_main.png", "training_curves_main.png"):
        assert (report.parent / "figures" / fig).stat().st_size > 10_000
    weights = (tmp_path / "runs/mini/trades/model.safetensors").read_bytes()
    run_study(cfg, out_root=tmp_path / "runs", quiet=True)  # second invocation: everything reused
    assert (tmp_path / "runs/mini/trades/model.safetensors").read_bytes() == weights
    assert "2 reused" in report.read_text()
    # a changed config: the old run directory is moved aside, not deleted; --only leaves report.md whole
    full = report.read_text()
    cfg.write_text(MINI.replace("epochs: 2", "epochs: 1"))
    partial = run_study(cfg, out_root=tmp_path / "runs", quiet=True, only=["standard"])
    assert (tmp_path / "runs/mini/standard.stale-1/model.safetensors").exists()
    assert not (tmp_path / "runs/mini/standard.stale-1/.lock").exists() and (tmp_path / "runs/mini/standard/.lock").exists()
    assert json.loads((tmp_path / "runs/mini/standard/model.json").read_text())["epoch"] == 1
    assert partial.name == "report_only.md" and "Partial report" in partial.read_text()
    assert "| trades |" not in partial.read_text() and report.read_text() == full


def test_the_report_phase_prints_a_line_per_section(tmp_path, capsys):
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(MINI.replace("runs:", "sections: [robustness, training_curves]\nruns:"))
    run_study(cfg, out_root=tmp_path / "runs", jobs=1)
    err = capsys.readouterr().err
    assert "report: section robustness (1/2)" in err and "report: section training_curves (2/2)" in err


@pytest.mark.slow
def test_default_digits_study_meets_its_bands(tmp_path):
    """`make study`: standard clean ≥ 95% and worst case ≤ 10%; robust methods ≥ 30 points above it."""
    report = run_study(Path(__file__).parents[1] / "configs/digits.yaml", out_root=tmp_path, quiet=True)
    evals = {d.name: json.loads((d / "eval.json").read_text()) for d in report.parent.iterdir() if (d / "eval.json").exists()}
    std = evals["standard"]
    assert std["clean"] >= 0.95 and std["worst_case"] <= 0.10
    for m in ("pgd_at", "trades", "alp"):
        assert evals[m]["worst_case"] >= std["worst_case"] + 0.30, (m, evals[m]["worst_case"])


def test_study_trains_each_run_on_two_processes_with_nproc(tmp_path):
    cfg = tmp_path / "mini.yaml"
    cfg.write_text(MINI)
    report = run_study(cfg, out_root=tmp_path / "runs", quiet=True, nproc=2, overrides=["train.epochs=1"])
    assert "| trades |" in report.read_text()
    lines = (tmp_path / "runs/mini/trades/metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # one line per epoch: only rank 0 wrote


def test_parallel_jobs_respect_dependencies(tmp_path):
    from robustlab.config import load_study, study_runs
    from robustlab.study import dependencies

    cfg = tmp_path / "dep.yaml"
    cfg.write_text(MINI + "  - {label: child, method: standard, callbacks: [{name: init_from, run: standard}]}\n")
    deps = dependencies(study_runs(load_study(cfg)))
    assert deps == {"standard": set(), "trades": set(), "child": {"standard"}}
    report = run_study(cfg, out_root=tmp_path / "runs", quiet=True, jobs=2, overrides=["train.epochs=1"])
    meta = json.loads((tmp_path / "runs/mini/child/model.json").read_text())
    assert meta["init_from"]["checkpoint"].endswith("standard/model")
    assert "| child |" in report.read_text()


def test_the_report_header_names_every_raised_flag_whatever_section_shows_the_run(tmp_path):
    """A paper block's table has no flags column: the header lists every run's raised flags."""
    from robustlab.config import load_study, study_runs
    from robustlab.evaluate import EvalResult
    from robustlab.report import RunRecord
    from robustlab.study import sanity_line

    runs = study_runs(load_study(Path(__file__).parents[1] / "configs/digits.yaml"))[:3]
    flags = [
        [{"name": "square", "raised": False, "checked": True, "detail": "a Square probe breaks 0 of 200 points"}],
        [{"name": "square", "raised": True, "checked": True, "detail": "a Square probe breaks 5 of 200 points"}],
        [],
    ]

    def record(i: int, raised: list) -> RunRecord:
        label, group, cfg = runs[i]
        result = EvalResult(threat="linf:0.2", suite=["fgsm"], n=200, clean=1.0, attacks={"fgsm": 0.5},
                            worst_case=0.5, step=0.05, flags=raised)
        return RunRecord(label, group, cfg, tmp_path / label, eval=result)

    records = [record(i, f) for i, f in enumerate(flags)]
    assert sanity_line(records) == ("- **sanity flags raised** for 1 run(s) (what each flag means: the run's eval.md): "
                                    "`pgd_at` square: a Square probe breaks 5 of 200 points.")
    assert sanity_line([records[0], records[2]]) == "- sanity flags: none raised (1 of 2 runs checked)."
