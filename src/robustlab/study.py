"""`robustlab study CONFIG`: train (or reuse) every run of a study, evaluate it, write the report.

Runs live in runs/<study>/<label>/. A finished run whose config fingerprint matches is reused; an
interrupted one is resumed; a run directory whose config no longer matches is moved aside
(<label>.stale-N), never deleted. Evaluations are reused when their settings match.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from . import checkpoint as ckpt
from .config import OutsideConfig, RunConfig, StudyConfig, load_study, outside_config, study_roles, study_runs
from .distributed import resolve_device
from .errors import RobustlabError
from .evaluate import EvalResult, evaluate, flag_lines, resolve_suite
from .processes import die_with_parent, keep_freed_memory, launch_kwargs
from .report import SECTIONS, RunRecord, StudyContext
from .report.context import outside_model
from .report.roles import check_roles
from .rundir import LOCK_FILE, locked, write_text_atomic
from .train import build_run, train_run
from .ui import console

DEFAULT_CONFIG = Path("configs/digits.yaml")


def run_state(cfg: RunConfig, run_dir: Path) -> str:
    """'new', 'done', 'partial' or 'stale' (the directory holds a run with another config)."""
    state = run_dir / ckpt.STATE_FILE
    if not state.exists():
        return "stale" if run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()) else "new"
    meta = ckpt.read_json(run_dir / "last.json") if (run_dir / "last.json").exists() else {}
    if meta.get("config_fingerprint") != cfg.fingerprint():
        return "stale"
    return "done" if meta.get("epoch") == cfg.train.epochs else "partial"


def move_aside(run_dir: Path) -> Path:
    """Move the directory's files to <name>.stale-N; its lock file stays (the study holds it)."""
    i = 1
    while (target := run_dir.with_name(f"{run_dir.name}.stale-{i}")).exists():
        i += 1
    target.mkdir()
    for entry in run_dir.iterdir():
        if entry.name != LOCK_FILE:
            entry.rename(target / entry.name)
    return target


def eval_entries(cfg: RunConfig) -> list[tuple[str, str | list, int | None]]:
    """(file stem, suite, max_samples) of a run's evaluations: the main suite (eval.json), then each
    extra suite (eval_<name>.json) on the first max_samples points of the same split."""
    e = cfg.eval
    return [("eval", e.suite, e.max_samples)] + [
        (f"eval_{x.label}", x.suite, x.max_samples or e.max_samples) for x in e.extra_suites
    ]


def eval_settings(cfg: RunConfig, suite: str | list, max_samples: int | None, fingerprint: str) -> dict[str, Any]:
    e = cfg.eval
    return {
        "suite": resolve_suite(suite),
        "threat": str(cfg.threat_model),
        "step": e.step,
        "step_ratio": e.step_ratio,
        "split": e.split,
        "max_samples": max_samples,
        "seed": e.seed,
        "model": fingerprint,
    }


def extra_evals(cfg: RunConfig, run_dir: Path) -> dict[str, EvalResult]:
    """The run's finished extra-suite evaluations by name (eval_<name>.json files)."""
    return {
        x.label: EvalResult.load(run_dir, f"eval_{x.label}")
        for x in cfg.eval.extra_suites
        if (run_dir / f"eval_{x.label}.json").exists()
    }


def evaluate_run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    data_root: str | None,
    device: torch.device,
    quiet: bool,
    dataset=None,
    outside: OutsideConfig | None = None,
) -> EvalResult:
    """Evaluate a run's selected model (or the `outside` model) with its eval config: the main suite (eval.json,
    returned), each extra suite (eval_<name>.json) and the sanity flags (stored with the main result). Parts whose
    settings match eval_settings.json are reused; an interrupted part resumes from its state file."""
    from . import data
    from .evaluate import sanity

    if outside is None:
        model_id = cfg.fingerprint() + str(ckpt.load_meta(run_dir).get("epoch"))
    else:  # the model's description and its weights' bytes: new weights in the same file are a new model
        weights = hashlib.sha256(Path(outside.weights).read_bytes()).hexdigest() if outside.weights else ""
        model_id = cfg.fingerprint() + json.dumps(outside.model_dump(), sort_keys=True) + weights
    entries = eval_entries(cfg)
    new = {stem: eval_settings(cfg, suite, max_samples, model_id) for stem, suite, max_samples in entries}
    new["flags"] = {"config": cfg.eval.flags.model_dump(), "evals": dict(new)}
    stamp = run_dir / "eval_settings.json"
    old = ckpt.read_json(stamp) if stamp.exists() else {}
    done = {k: v for k, v in old.items() if new.get(k) == v}
    cache: dict[str, Any] = {}

    def model_and_split():
        if not cache:
            ds = dataset if dataset is not None else data.load(cfg.dataset.name, root=data_root, **cfg.dataset.options)
            model = ckpt.load_model(run_dir, device)[0] if outside is None else outside_model(outside, ds, device)
            cache.update(model=model, split=ds.split(cfg.eval.split), num_classes=ds.num_classes)
        return cache["model"], cache["split"], cache["num_classes"]

    e = cfg.eval
    results: dict[str, EvalResult] = {}
    for stem, suite, max_samples in entries:
        if stem in done and (run_dir / f"{stem}.json").exists():
            results[stem] = EvalResult.load(run_dir, stem)
            continue
        model, split, k = model_and_split()
        results[stem] = evaluate(
            model,
            split.head(max_samples),
            cfg.threat_model,
            suite,
            step=e.step,
            step_ratio=e.step_ratio,
            batch_size=e.batch_size,
            seed=e.seed,
            device=device,
            quiet=quiet,
            num_classes=k,
            state_path=run_dir / f"{stem}_state",
            precision=e.precision,
        )
        results[stem].save(run_dir, stem)
        done[stem] = new[stem]
        done.pop("flags", None)
        write_text_atomic(stamp, json.dumps(done))
    primary = results["eval"]
    if e.flags.enabled and ("flags" not in done or not primary.flags):
        model, split, k = model_and_split()
        primary.flags = sanity.check(
            model,
            split.head(e.max_samples),
            cfg.threat_model,
            list(results.values()),
            e.flags,
            num_classes=k,
            seed=e.seed,
            device=device,
            batch_size=e.batch_size,
        )
        primary.save(run_dir)
        if not quiet:
            console.print(flag_lines(primary.flags).strip(), markup=False)
    elif not e.flags.enabled and primary.flags:
        primary.flags = []
        primary.save(run_dir)
    done["flags"] = new["flags"]
    write_text_atomic(stamp, json.dumps(done))
    return primary


def dependencies(runs: list[tuple[str, str, RunConfig]]) -> dict[str, set[str]]:
    """For each run, the runs of the study it needs first: those its callbacks name with a `run` option
    (e.g. `init_from: {run: encoder}`)."""
    labels = {label for label, _, _ in runs}
    return {
        label: {str(c.options["run"]) for c in cfg.callbacks if str(c.options.get("run")) in labels}
        for label, _, cfg in runs
    }


_WORKER_DATA: dict[str, Any] = {}


def _dataset(cfg: RunConfig, data_root: str | None, cache: dict[str, Any]):
    from . import data

    key = json.dumps(cfg.dataset.model_dump(), sort_keys=True)
    if key not in cache:
        cache[key] = data.load(cfg.dataset.name, root=data_root, **cfg.dataset.options)
    return cache[key]


class DistributedLauncher:
    """Trains one run of a study under torchrun on `nproc` processes (`robustlab train --run LABEL`)."""

    def __init__(self, config: Path, overrides: list[str], nproc: int, data_root: str | None, device: str):
        self.config, self.overrides, self.nproc, self.data_root, self.device = (
            config,
            overrides,
            nproc,
            data_root,
            device,
        )

    def __call__(self, label: str, run_dir: Path, resume: bool, quiet: bool) -> None:
        import socket
        import subprocess
        import sys

        # `--` keeps torchrun's own parser off our options (it would take --run for its --run-path)
        with socket.socket() as s:  # a free port for this launch's rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            str(self.nproc),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{port}",
            "-m",
            "robustlab",
            "--",
            "train",
            "--config",
            str(self.config),
            "--run",
            label,
            "--out",
            str(run_dir),
            "--device",
            self.device,
        ]
        cmd += (
            [a for o in self.overrides for a in ("--set", o)]
            + (["--resume"] if resume else [])
            + (["--quiet"] if quiet else [])
        )
        cmd += ["--data-root", self.data_root] if self.data_root else []
        proc = subprocess.run(
            cmd, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE, text=True, **launch_kwargs()
        )
        if proc.returncode != 0:
            raise RobustlabError(
                f"run {label!r}: distributed training on {self.nproc} processes failed "
                f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}"
            )


def _train_and_evaluate(
    cfg: RunConfig,
    run_dir: Path,
    state: str,
    data_root: str | None,
    device: str,
    quiet: bool,
    threads: int | None = None,
    cache: dict[str, Any] | None = None,
    launch=None,
    label: str = "",
) -> float:
    """Train (or resume) one run unless it is done, then evaluate it; returns the training seconds."""
    if threads is not None:
        torch.set_num_threads(threads)
    ds = _dataset(cfg, data_root, _WORKER_DATA if cache is None else cache)
    t0 = time.perf_counter()
    if state != "done" and launch is not None:
        launch(label, run_dir, state == "partial", quiet)
    elif state != "done":
        train_run(cfg, run_dir, resume=state == "partial", dataset=ds, quiet=quiet, device=device)
    seconds = time.perf_counter() - t0
    evaluate_run(cfg, run_dir, data_root=data_root, device=torch.device(device), quiet=quiet, dataset=ds)
    return seconds


def default_jobs(device: torch.device) -> int:
    """Parallel runs: one per CPU core (at most 4) on the CPU, one on a GPU."""
    return 1 if device.type != "cpu" else max(1, min(4, os.cpu_count() or 1))


def run_study(
    config: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    out_root: str | Path = "runs",
    data_root: str | None = None,
    device: str | None = None,
    quiet: bool = False,
    only: list[str] | None = None,
    jobs: int | None = None,
    nproc: int = 1,
) -> Path:
    """Run the study and write runs/<study>/report.md; returns the report path.

    With `jobs` > 1, runs train and evaluate in that many worker processes at once (each with its
    share of the CPU threads), a run starting once the runs it depends on have finished. With `nproc`
    > 1, each run trains under torchrun on that many processes (DistributedDataParallel), one run at a
    time, and is evaluated here.
    """
    study = load_study(config or DEFAULT_CONFIG, overrides)
    data_root = data_root or study.data_root
    runs = study_runs(study)
    roles = study_roles(study)
    check_roles(study, roles)  # every run's role, --only or not: a typo fails before any training
    outside = study.outside
    if only:
        labels = [label for label, _, _ in runs] + [o.label for o in outside]
        unknown = sorted(set(only) - set(labels))
        if unknown:
            raise RobustlabError(f"--only {unknown}: no such run; runs of {study.name!r}: {', '.join(labels)}.")
        runs = [r for r in runs if r[0] in only]
        outside = [o for o in outside if o.label in only]
    if not runs and not outside:
        raise RobustlabError(f"study {study.name!r} has no runs and no outside models.")
    out_dir = Path(out_root) / study.name
    datasets: dict[str, Any] = {}
    # build every run first: a bad name or option fails before any training starts
    for _, _, cfg in runs:
        build_run(cfg, dataset=_dataset(cfg, data_root, datasets))
    for spec in study.sections:
        SECTIONS.get(spec if isinstance(spec, str) else str(spec.get("name")))
    for o in outside:  # the files an outside model needs, before any training
        file = o.model.rpartition(":")[0]
        for what, path in (("model", file if not o.model.startswith("robustbench:") else None), ("weights", o.weights)):
            if path and not Path(path).expanduser().is_file():
                raise RobustlabError(
                    f"study {study.name!r} outside model {o.label!r}: {what} file {path} does not exist."
                )
    dev = resolve_device(device or (runs[0][2].device if runs else "auto"))
    if nproc < 1:
        raise RobustlabError(f"nproc={nproc}; allowed: 1 or more processes per run.")
    jobs = 1 if nproc > 1 else (jobs or default_jobs(dev))
    if jobs < 1:
        raise RobustlabError(f"jobs={jobs}; allowed: 1 or more parallel runs.")
    launch = None
    if nproc > 1:
        launch = DistributedLauncher(Path(config or DEFAULT_CONFIG), list(overrides), nproc, data_root, str(dev))
    # one writer: the study directory (its report) and every run directory it touches, for the whole study
    with locked([out_dir] + [out_dir / label for label, _, _ in runs] + [out_dir / o.label for o in outside]):
        t_study = time.perf_counter()
        states = {}
        for label, _, cfg in runs:
            run_dir = out_dir / label
            states[label] = run_state(cfg, run_dir)
            if states[label] == "stale":
                moved = move_aside(run_dir)
                console.print(f"{run_dir} holds a run with a different config; moved it to {moved}")
        seconds = _execute(runs, states, out_dir, data_root, str(dev), quiet, jobs, datasets, launch)
        records = []
        for label, group, cfg in runs:
            run_dir = out_dir / label
            primary = evaluate_run(
                cfg, run_dir, data_root=data_root, device=dev, quiet=True, dataset=_dataset(cfg, data_root, datasets)
            )
            records.append(
                RunRecord(
                    label,
                    group,
                    cfg,
                    run_dir,
                    eval=primary,
                    extra=extra_evals(cfg, run_dir),
                    train_seconds=seconds[label],
                    reused=states[label] == "done",
                    role=roles.get(label),
                )
            )
        for o in outside:
            cfg = outside_config(study, o)
            if not quiet:
                console.rule(f"outside model {o.label}: {o.model} on {cfg.dataset.name}, {cfg.threat_model}")
            primary = evaluate_run(
                cfg,
                out_dir / o.label,
                data_root=data_root,
                device=dev,
                quiet=quiet,
                dataset=_dataset(cfg, data_root, datasets),
                outside=o,
            )
            extra = extra_evals(cfg, out_dir / o.label)
            records.append(RunRecord(o.label, o.group, cfg, out_dir / o.label, primary, extra, role=o.role, outside=o))
        body = _sections(study, StudyContext(study, out_dir, records, dev, quiet=quiet, data_root=data_root), quiet)
        total = time.perf_counter() - t_study
        # a study of some runs only (--only) writes its report beside the full one, never over it
        report = out_dir / ("report.md" if not only else "report_only.md")
        write_text_atomic(report, header(study, records, total, dev, jobs, only) + "\n" + "\n".join(body))
    if not quiet:
        console.print(f"report: {report}  ({total:.0f} s)")
    return report


def _sections(study: StudyConfig, ctx: StudyContext, quiet: bool) -> list[str]:
    """The report's sections in the config's order, with a line per section on the terminal (the analyses
    behind them take minutes)."""
    body = []
    for i, spec in enumerate(study.sections):
        name, options = (
            (spec, {}) if isinstance(spec, str) else (spec["name"], {k: v for k, v in spec.items() if k != "name"})
        )
        t0 = time.perf_counter()
        section = SECTIONS.create(name, ctx, **options)
        if section:
            body.append(section)
        if not quiet:
            console.print(f"report: section {name} ({i + 1}/{len(study.sections)}) {time.perf_counter() - t0:.0f} s")
    return body


def _execute(
    runs, states, out_dir: Path, data_root, device: str, quiet: bool, jobs: int, datasets, launch=None
) -> dict[str, float]:
    """Train and evaluate every run, in order, `jobs` at a time; returns each run's training seconds."""
    deps = dependencies(runs)
    order = {label: i for i, (label, _, _) in enumerate(runs)}
    n = len(runs)
    seconds: dict[str, float] = {}
    if jobs == 1:
        for i, (label, _, cfg) in enumerate(runs):
            if not quiet:
                console.rule(
                    f"[{i + 1}/{n}] {label}: {cfg.method.name} on {cfg.dataset.name} / {cfg.model.name}, "
                    f"{cfg.threat_model}"
                )
            seconds[label] = _train_and_evaluate(
                cfg,
                out_dir / label,
                states[label],
                data_root,
                device,
                quiet,
                cache=datasets,
                launch=launch,
                label=label,
            )
        return seconds
    import concurrent.futures as cf
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending = {label: cfg for label, _, cfg in runs}
    running: dict[cf.Future, str] = {}
    # workers end with this process, however it ends (they would otherwise train on as orphans)
    with cf.ProcessPoolExecutor(
        max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_start, initargs=(os.getpid(),)
    ) as pool:
        while pending or running:
            ready = sorted((lb for lb in pending if deps[lb] <= seconds.keys()), key=order.__getitem__)
            for label in ready[: jobs - len(running)]:
                cfg = pending.pop(label)
                running[
                    pool.submit(
                        _train_and_evaluate, cfg, out_dir / label, states[label], data_root, device, True, threads
                    )
                ] = label
            if not running:
                raise RobustlabError(f"runs {sorted(pending)} wait for runs that are not in the study.")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                label = running.pop(fut)
                try:
                    seconds[label] = fut.result()
                except BaseException:
                    for other in running:
                        other.cancel()
                    raise
                if not quiet:
                    what = "reused" if states[label] == "done" else f"trained in {seconds[label]:.0f} s"
                    console.print(f"[{len(seconds)}/{n}] {label}: {what}, evaluated")
    return seconds


def _worker_start(parent: int) -> None:
    """A study worker: ends with the study's process and keeps the memory its tensors free."""
    die_with_parent(parent)
    keep_freed_memory()


def header(
    study: StudyConfig,
    records: list[RunRecord],
    seconds: float,
    device: torch.device,
    jobs: int = 1,
    only: list[str] | None = None,
) -> str:
    first = records[0]
    reused = sum(r.reused for r in records)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"# Study `{study.name}`", ""]
    if only:
        lines += [
            f"**Partial report**: only the runs {', '.join(only)} (`--only`); `report.md` is the whole study's.",
            "",
        ]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [
        f"- data: {first.config.dataset.name}; model(s): {', '.join(sorted({r.config.model.name for r in records}))}; "
        f"threat model: {first.config.threat_model}",
        f"- runs: {len(records)} ({reused} reused from an earlier invocation); wall time of this invocation: "
        f"{seconds:.0f} s "
        f"on {device} ({jobs} run(s) at a time, {os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        f"- robustlab {__version__}, torch {torch.__version__}, written {when}",
        "- model selection: validation split carved from train; the test split is used only for the tables below.",
        sanity_line(records),
        "",
    ]
    return "\n".join(lines)


def sanity_line(records: list[RunRecord]) -> str:
    """Every raised sanity flag of every run, whichever sections show the run (a paper section's table has
    no flags column)."""
    raised = [(r.label, f) for r in records for f in r.eval.flags if f["raised"]]
    if not raised:
        checked = sum(bool(r.eval.flags) for r in records)
        return f"- sanity flags: none raised ({checked} of {len(records)} runs checked)."
    details = "; ".join(f"`{label}` {f['name']}: {f['detail']}" for label, f in raised)
    return (
        f"- **sanity flags raised** for {len({label for label, _ in raised})} run(s) (what each flag means: "
        f"the run's eval.md): {details}."
    )
