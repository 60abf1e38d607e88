"""Robustness evaluation: clean accuracy, accuracy under each attack of a suite, per-sample worst case.

A suite is an ordered list of attack specs. Each attack runs on every clean-correct test point
(points the model already gets wrong count as wrong under every attack), so each column is that
attack's own accuracy; the worst case is the share of points that no attack of the suite breaks.

Suite `paper` is the AALP Table 2 protocol: FGSM, PGD-10/20/40/100, CW-10/20/40/100 at the run's
threat model, iterative step size `eval.step` (default eps × `eval.step_ratio` = eps/4).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .attacks import build as build_attack
from .data import Split, batches, check_images, check_labels
from .errors import RobustlabError
from .registry import Registry
from .threat import ThreatModel
from .ui import console, out, progress_bar

SUITES: Registry[list[str | dict[str, Any]]] = Registry("suite")


@SUITES.register("paper")
def paper_suite() -> list[str | dict[str, Any]]:
    """AALP Table 2: FGSM, PGD-{10,20,40,100}, CW-{10,20,40,100}."""
    return ["fgsm"] + [f"pgd-{k}" for k in (10, 20, 40, 100)] + [f"cw-{k}" for k in (10, 20, 40, 100)]


@SUITES.register("quick")
def quick_suite() -> list[str | dict[str, Any]]:
    """FGSM, PGD-20, CW-20: a fast check, not a paper protocol."""
    return ["fgsm", "pgd-20", "cw-20"]


def resolve_suite(suite: str | list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
    return SUITES.get(suite)() if isinstance(suite, str) else list(suite)


def attack_label(spec: str | dict[str, Any]) -> str:
    if isinstance(spec, str):
        return spec
    extra = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({extra})" if extra else str(spec["name"])


@dataclass
class EvalResult:
    """Accuracies in [0, 1]; `per_sample[name]` is a bool array (robust to that attack)."""

    threat: str
    suite: list[str]
    n: int
    clean: float
    attacks: dict[str, float]
    worst_case: float
    step: float
    seconds: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_sample")
        return d

    def row(self) -> dict[str, float]:
        """clean, each attack, worst case — in suite order."""
        return {"clean": self.clean, **self.attacks, "worst case": self.worst_case}

    def save(self, run_dir: str | Path, stem: str = "eval") -> None:
        run_dir = Path(run_dir)
        (run_dir / f"{stem}.json").write_text(json.dumps(self.to_json(), indent=2))
        np.savez_compressed(run_dir / f"{stem}_samples.npz", **{k: v for k, v in self.per_sample.items()})
        (run_dir / f"{stem}.md").write_text(markdown_table({run_dir.name: self}))

    @classmethod
    def load(cls, run_dir: str | Path, stem: str = "eval") -> "EvalResult":
        d = json.loads((Path(run_dir) / f"{stem}.json").read_text())
        samples = Path(run_dir) / f"{stem}_samples.npz"
        per = dict(np.load(samples, allow_pickle=False)) if samples.exists() else {}
        return cls(**d, per_sample=per)


def evaluate(
    model: nn.Module,
    split: Split,
    threat: ThreatModel | str,
    suite: str | list[str | dict[str, Any]] = "paper",
    *,
    step: float | None = None,
    step_ratio: float = 0.25,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str | None = None,
    quiet: bool = False,
    on_attack_done: Callable[[str, np.ndarray], None] | None = None,
) -> EvalResult:
    """Evaluate `model` on `split` under every attack of `suite` (see module doc)."""
    threat = ThreatModel.parse(threat)
    if threat.eps <= 0:
        raise RobustlabError(f"evaluation needs eps > 0; got threat model {threat}.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    num_classes = getattr(model, "num_classes", None)
    check_images("evaluate", split.x)
    if num_classes is not None:
        check_labels("evaluate", split.y, num_classes, n=split.x.shape[0])
    specs = resolve_suite(suite)
    step = step if step is not None else threat.eps * step_ratio
    attacks = [(attack_label(s), build_attack(s, threat, defaults={"step": step}, seed=seed, num_classes=num_classes)) for s in specs]
    was_training = model.training
    model.eval()
    data = split.to(device)
    n = len(data)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        clean = torch.cat([model(x).argmax(1) == y for x, y in batches(data, batch_size)]).cpu()
    seconds["clean"] = time.perf_counter() - t0
    per_sample = {"clean": clean.numpy()}
    correct_idx = torch.nonzero(clean).flatten()
    target = data.subset(correct_idx.to(device))
    n_batches = -(-len(target) // batch_size) if len(target) else 0
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task("evaluate", total=len(attacks) * n_batches, info="")
        for label, attack in attacks:
            t0 = time.perf_counter()
            robust = torch.zeros(n, dtype=torch.bool)
            survived = []
            for b, (x, y) in enumerate(batches(target, batch_size)):
                gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
                survived.append(~attack.run(model, x, y, generator=gen).success.cpu())
                bar.update(task, advance=1, info=label)
            if survived:
                robust[correct_idx] = torch.cat(survived)
            per_sample[label] = robust.numpy()
            seconds[label] = time.perf_counter() - t0
            if on_attack_done is not None:
                on_attack_done(label, per_sample[label])
            if not quiet:
                console.print(f"  {label:<10} {robust.float().mean().item():7.2%}  ({seconds[label]:.1f}s)")
    model.train(was_training)
    worst = np.logical_and.reduce([v for v in per_sample.values()])
    return EvalResult(
        threat=str(threat),
        suite=[a for a, _ in attacks],
        n=n,
        clean=float(clean.float().mean()),
        attacks={label: float(per_sample[label].mean()) for label, _ in attacks},
        worst_case=float(worst.mean()),
        step=step,
        seconds=seconds,
        per_sample=per_sample,
    )


def markdown_table(results: dict[str, EvalResult], digits: int = 2) -> str:
    """Rows = runs, columns = clean, each attack, worst case (accuracy %)."""
    if not results:
        return ""
    columns: list[str] = []
    for r in results.values():
        for c in r.row():
            if c not in columns:
                columns.append(c)
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, r in results.items():
        row = r.row()
        cells = [f"{100 * row[c]:.{digits}f}" if c in row else "–" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, EvalResult], title: str = "") -> None:
    from rich.table import Table

    first = next(iter(results.values()))
    table = Table(title=title or f"accuracy (%) under {first.threat}, n={first.n}")
    table.add_column("run")
    columns = list(first.row())
    for c in columns:
        table.add_column(c, justify="right")
    for name, r in results.items():
        row = r.row()
        table.add_row(name, *[f"{100 * row[c]:.2f}" if c in row else "–" for c in columns])
    out.print(table)
