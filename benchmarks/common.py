"""Timing helpers for the benchmarks: medians of repeated runs, ratios in the same process."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timed(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of `fn()` in seconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float, object]]:
    """{name: (median wall seconds, median process CPU seconds, last result)} of every `fns[name]()`, called in
    turn `repeats` times (the order rotating each round), so a load that comes and goes weighs on all alike."""
    names = list(fns)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    last: dict[str, object] = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            last[name] = fns[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k]), last[k]) for k in names}


def machine() -> str:
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    return f"{dev}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def input_grad_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The bare cost an attack step cannot avoid: forward, CE loss, backward to the input."""
    x = x.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return g


def study_run(label: str) -> Path:
    """The run directory of `label` in the default digits study, trained (into runs/digits) if missing."""
    from robustlab.config import load_study, study_runs
    from robustlab.study import run_state
    from robustlab.train import train_run

    cfg = {lab: c for lab, _, c in study_runs(load_study("configs/digits.yaml"))}[label]
    run_dir = Path("runs/digits") / label
    if run_state(cfg, run_dir) != "done":
        print(f"training {run_dir} (the digits study's {label!r} run) ...")
        train_run(cfg, run_dir, resume=run_state(cfg, run_dir) == "partial", quiet=True, device="cpu")
    return run_dir


def art_classifier(model: torch.nn.Module, num_classes: int, input_shape: tuple[int, ...]):
    """`model` wrapped as an adversarial-robustness-toolbox PyTorchClassifier on CPU, inputs in [0, 1] (raises
    ImportError when ART is not installed)."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=num_classes,
                             clip_values=(0.0, 1.0), device_type="cpu")
