"""Robustness curves: accuracy versus ε of trained models under an attack suite (`robustlab sweep`).

Each ε is a full evaluation (robustlab.evaluate) of the suite with the threat model's norm and that
radius; iterative step sizes scale with ε (eps × step_ratio). ε = 0 is the clean accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import Split
from .errors import RobustlabError
from .evaluate import evaluate
from .threat import ThreatModel


def parse_eps(text: str, norm: str) -> list[float]:
    """ "0.05,0.1,8px,8/255" -> radii in the `norm` (each token parsed like a threat model's eps)."""
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    if not tokens:
        raise RobustlabError(f"--eps {text!r}: give comma-separated radii, e.g. 0.05,0.1,0.2 or 2px,4px,8px.")
    return sorted({ThreatModel.parse(f"{norm}:{t}").eps for t in tokens})


def sweep(
    model: nn.Module,
    split: Split,
    norm: str,
    radii: list[float],
    suite: str | list = "quick",
    *,
    step_ratio: float = 0.25,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str | None = None,
    num_classes: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """{"norm", "suite", "n", "eps": [0, ...], "worst_case": [...], "attacks": {label: [...]}}, accuracies
    in [0, 1]."""
    radii = sorted(r for r in radii if r > 0)
    if not radii:
        raise RobustlabError("a sweep needs at least one radius > 0.")
    curve: dict[str, Any] = {
        "norm": norm,
        "suite": suite,
        "n": len(split),
        "eps": [0.0],
        "worst_case": [],
        "attacks": {},
    }
    for eps in radii:
        result = evaluate(
            model,
            split,
            ThreatModel.parse(f"{norm}:{eps!r}"),
            suite,
            step_ratio=step_ratio,
            batch_size=batch_size,
            seed=seed,
            device=device,
            num_classes=num_classes,
            quiet=True,
        )
        if not curve["worst_case"]:
            curve["worst_case"].append(result.clean)
            curve["attacks"] = {label: [result.clean] for label in result.attacks}
        curve["eps"].append(eps)
        curve["worst_case"].append(result.worst_case)
        for label, acc in result.attacks.items():
            curve["attacks"][label].append(acc)
        if not quiet:
            from .ui import console

            console.print(f"  ε = {eps:.4g}: worst case {100 * result.worst_case:.2f}%")
    return curve


def plot(curves: dict[str, dict[str, Any]], path: Path, title: str = "", mark: float | None = None) -> None:
    """One line per model: worst-case accuracy (%) against ε, a dotted line at ε = `mark` (the training ε)."""
    from .report import plots

    plt = plots.plt
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, (name, c) in enumerate(curves.items()):
        ax.plot(
            c["eps"],
            [100 * a for a in c["worst_case"]],
            marker="o",
            ms=3.5,
            lw=1.6,
            color=plots.COLORS[i % 10],
            label=name,
        )
    if mark is not None:
        ax.axvline(mark, color="0.5", ls=":", lw=1, label=f"training ε = {mark:g}")
    ax.set_xlabel(f"ε ({next(iter(curves.values()))['norm']})")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    plots.save(fig, path)
