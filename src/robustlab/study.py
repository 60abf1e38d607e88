"""`robustlab study CONFIG`: train (or reuse) every run of a study, evaluate it, write the report.

Runs live in runs/<study>/<label>/. A finished run whose config fingerprint matches is reused; an
interrupted one is resumed; a run directory whose config no longer matches is moved aside
(<label>.stale-N), never deleted. Evaluations are reused when their settings match.
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__
from . import checkpoint as ckpt
from .config import RunConfig, StudyConfig, load_study, study_runs
from .evaluate import EvalResult, evaluate, flag_lines, resolve_suite
from .report import SECTIONS, RunRecord, StudyContext
from .train import build_run, resolve_device, train_run
from .ui import console

DEFAULT_CONFIG = Path("configs/digits.yaml")


def run_state(cfg: RunConfig, run_dir: Path) -> str:
    """'new', 'done', 'partial' or 'stale' (the directory holds a run with another config)."""
    state = run_dir / ckpt.STATE_FILE
    if not state.exists():
        return "stale" if run_dir.exists() and any(run_dir.iterdir()) else "new"
    meta = json.loads((run_dir / "last.json").read_text()) if (run_dir / "last.json").exists() else {}
    if meta.get("config_fingerprint") != cfg.fingerprint():
        return "stale"
    return "done" if meta.get("epoch") == cfg.train.epochs else "partial"


def move_aside(run_dir: Path) -> Path:
    i = 1
    while (target := run_dir.with_name(f"{run_dir.name}.stale-{i}")).exists():
        i += 1
    run_dir.rename(target)
    return target


def eval_entries(cfg: RunConfig) -> list[tuple[str, str | list, int | None]]:
    """(file stem, suite, max_samples) of a run's evaluations: the main suite (eval.json), then each
    extra suite (eval_<name>.json) on the first max_samples points of the same split."""
    e = cfg.eval
    return [("eval", e.suite, e.max_samples)] + [(f"eval_{x.label}", x.suite, x.max_samples or e.max_samples) for x in e.extra_suites]


def eval_settings(cfg: RunConfig, suite: str | list, max_samples: int | None, fingerprint: str) -> dict[str, Any]:
    e = cfg.eval
    return {"suite": resolve_suite(suite), "threat": str(cfg.threat_model), "step": e.step, "step_ratio": e.step_ratio,
            "split": e.split, "max_samples": max_samples, "seed": e.seed, "model": fingerprint}


def extra_evals(cfg: RunConfig, run_dir: Path) -> dict[str, EvalResult]:
    """The run's finished extra-suite evaluations by name (eval_<name>.json files)."""
    return {x.label: EvalResult.load(run_dir, f"eval_{x.label}") for x in cfg.eval.extra_suites
            if (run_dir / f"eval_{x.label}.json").exists()}


def evaluate_run(cfg: RunConfig, run_dir: Path, *, data_root: str | None, device: torch.device, quiet: bool, dataset=None) -> EvalResult:
    """Evaluate a run's selected model with its eval config: the main suite (eval.json, returned), each
    extra suite (eval_<name>.json) and the sanity flags (stored with the main result). Parts whose
    settings match eval_settings.json are reused; an interrupted part resumes from its state file."""
    from . import data, sanity

    model_id = cfg.fingerprint() + str(ckpt.load_meta(run_dir).get("epoch"))
    entries = eval_entries(cfg)
    new = {stem: eval_settings(cfg, suite, max_samples, model_id) for stem, suite, max_samples in entries}
    new["flags"] = {"config": cfg.eval.flags.model_dump(), "evals": dict(new)}
    stamp = run_dir / "eval_settings.json"
    old = json.loads(stamp.read_text()) if stamp.exists() else {}
    done = {k: v for k, v in old.items() if new.get(k) == v}
    cache: dict[str, Any] = {}

    def model_and_split():
        if not cache:
            ds = dataset if dataset is not None else data.load(cfg.dataset.name, root=data_root, **cfg.dataset.options)
            cache.update(model=ckpt.load_model(run_dir, device)[0], split=ds.split(cfg.eval.split), num_classes=ds.num_classes)
        return cache["model"], cache["split"], cache["num_classes"]

    e = cfg.eval
    results: dict[str, EvalResult] = {}
    for stem, suite, max_samples in entries:
        if stem in done and (run_dir / f"{stem}.json").exists():
            results[stem] = EvalResult.load(run_dir, stem)
            continue
        model, split, k = model_and_split()
        results[stem] = evaluate(model, split.head(max_samples), cfg.threat_model, suite, step=e.step, step_ratio=e.step_ratio,
                                 batch_size=e.batch_size, seed=e.seed, device=device, quiet=quiet, num_classes=k,
                                 state_path=run_dir / f"{stem}_state")
        results[stem].save(run_dir, stem)
        done[stem] = new[stem]
        done.pop("flags", None)
        stamp.write_text(json.dumps(done))
    primary = results["eval"]
    if e.flags.enabled and ("flags" not in done or not primary.flags):
        model, split, k = model_and_split()
        primary.flags = sanity.check(model, split.head(e.max_samples), cfg.threat_model, list(results.values()), e.flags,
                                     num_classes=k, seed=e.seed, device=device, batch_size=e.batch_size)
        primary.save(run_dir)
        if not quiet:
            console.print(flag_lines(primary.flags).strip(), markup=False)
    elif not e.flags.enabled and primary.flags:
        primary.flags = []
        primary.save(run_dir)
    done["flags"] = new["flags"]
    stamp.write_text(json.dumps(done))
    return primary


def run_study(config: str | Path | None = None, *, overrides: list[str] = (), out_root: str | Path = "runs",
              data_root: str | None = None, device: str | None = None, quiet: bool = False,
              only: list[str] | None = None) -> Path:
    """Run the study and write runs/<study>/report.md; returns the report path."""
    study = load_study(config or DEFAULT_CONFIG, overrides)
    data_root = data_root or study.data_root
    runs = study_runs(study)
    if only:
        unknown = sorted(set(only) - {label for label, _, _ in runs})
        if unknown:
            from .errors import RobustlabError

            raise RobustlabError(f"--only {unknown}: no such run; runs of {study.name!r}: {', '.join(l for l, _, _ in runs)}.")
        runs = [r for r in runs if r[0] in only]
    out_dir = Path(out_root) / study.name
    datasets: dict[str, Any] = {}
    # build every run first: a bad name or option fails before any training starts
    for label, _, cfg in runs:
        key = json.dumps(cfg.dataset.model_dump(), sort_keys=True)
        if key not in datasets:
            from . import data

            datasets[key] = data.load(cfg.dataset.name, root=data_root, **cfg.dataset.options)
        build_run(cfg, dataset=datasets[key])
    for spec in study.sections:
        SECTIONS.get(spec if isinstance(spec, str) else spec.get("name"))
    dev = resolve_device(device or runs[0][2].device)
    t_study = time.perf_counter()
    records = []
    for i, (label, group, cfg) in enumerate(runs):
        run_dir = out_dir / label
        ds = datasets[json.dumps(cfg.dataset.model_dump(), sort_keys=True)]
        state = run_state(cfg, run_dir)
        if not quiet:
            console.rule(f"[{i + 1}/{len(runs)}] {label}: {cfg.method.name} on {cfg.dataset.name} / {cfg.model.name}, {cfg.threat_model}")
        if state == "stale":
            moved = move_aside(run_dir)
            console.print(f"{run_dir} holds a run with a different config; moved it to {moved}")
        t0 = time.perf_counter()
        if state != "done":
            train_run(cfg, run_dir, resume=state == "partial", dataset=ds, quiet=quiet, device=str(dev))
        record = RunRecord(label, group, cfg, run_dir, train_seconds=time.perf_counter() - t0, reused=state == "done")
        record.eval = evaluate_run(cfg, run_dir, data_root=data_root, device=dev, quiet=quiet, dataset=ds)
        record.extra = extra_evals(cfg, run_dir)
        records.append(record)
    ctx = StudyContext(study, out_dir, records, dev, quiet=quiet, data_root=data_root)
    body = []
    for spec in study.sections:
        name, options = (spec, {}) if isinstance(spec, str) else (spec["name"], {k: v for k, v in spec.items() if k != "name"})
        section = SECTIONS.create(name, ctx, **options)
        if section:
            body.append(section)
    total = time.perf_counter() - t_study
    report = out_dir / "report.md"
    report.write_text(header(study, records, total, dev) + "\n" + "\n".join(body))
    if not quiet:
        console.print(f"report: {report}  ({total:.0f} s)")
    return report


def header(study: StudyConfig, records: list[RunRecord], seconds: float, device: torch.device) -> str:
    first = records[0]
    reused = sum(r.reused for r in records)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"# Study `{study.name}`", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [
        f"- data: {first.config.dataset.name}; model(s): {', '.join(sorted({r.config.model.name for r in records}))}; "
        f"threat model: {first.config.threat_model}",
        f"- runs: {len(records)} ({reused} reused from an earlier invocation); wall time of this invocation: {seconds:.0f} s "
        f"on {device} ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        f"- robustlab {__version__}, torch {torch.__version__}, written {when}",
        "- model selection: validation split carved from train; the test split is used only for the tables below.",
        "",
    ]
    return "\n".join(lines)
