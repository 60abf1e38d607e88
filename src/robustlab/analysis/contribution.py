"""Feature contribution (Wu et al., AALP, arXiv 2005.11904, Eq. 5, Figs. 1 and 7): how strongly the loss leans
on each feature unit.

    C_d = mean_i | ∂CE(f(x_i), y_i) / ∂A_fc,id |     (one value per unit of the layer before the logits)

The paper's observation: more robust models have fewer high-contribution units (the histogram of C has
less mass in its upper tail). `robustlab analyze RUN --what feature_contribution` computes C on clean
(default) or adversarial test points and draws the run's histogram; the AALP report overlays the
histograms of several models on shared bins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..attacks import build as build_attack
from ..data import Split, batches
from ..methods.guided_dropout import feature_gradient
from ..models import ContractModel, eval_mode
from ..threat import ThreatModel
from .figures import pyplot, save_figure
from .registry import ANALYSES, AnalysisContext


def feature_contribution(model: ContractModel, split: Split, *, batch_size: int = 500) -> torch.Tensor:
    """C (Eq. 5), shape (D,): the mean over the split of |∂CE_i/∂A_i| per feature unit (model in eval mode)."""
    total = None
    with eval_mode(model), torch.no_grad():
        for x, y in batches(split, batch_size):
            g = feature_gradient(model, model.forward_features(x), y).abs().sum(0)
            total = g if total is None else total + g
    assert total is not None, "empty split"
    return total / len(split)


def adversarial_split(
    model: nn.Module,
    split: Split,
    attack_spec: str | dict,
    threat: ThreatModel,
    *,
    seed: int = 0,
    batch_size: int = 500,
) -> Split:
    """The split with every image replaced by its adversarial example under `attack_spec` at `threat`."""
    attack = build_attack(attack_spec, threat, seed=seed, num_classes=getattr(model, "num_classes", None))
    gen = torch.Generator(device=split.x.device).manual_seed(seed)
    return Split(torch.cat([attack(model, x, y, generator=gen) for x, y in batches(split, batch_size)]), split.y)


def summarize(c: np.ndarray) -> dict[str, float]:
    """Mean, median, 90th percentile and max of C, and the share of ΣC carried by the top 10% of units."""
    top = np.sort(c)[::-1][: max(1, int(np.ceil(0.1 * c.size)))]
    return {
        "mean": float(c.mean()),
        "median": float(np.median(c)),
        "p90": float(np.quantile(c, 0.9)),
        "max": float(c.max()),
        "top10_share": float(top.sum() / max(c.sum(), 1e-30)),
    }


def high_contribution_counts(
    contributions: dict[str, np.ndarray], quantile: float = 0.9
) -> tuple[float, dict[str, int]]:
    """(τ, {name: number of units with C > τ}) with τ the `quantile` of all models' C values pooled."""
    tau = float(np.quantile(np.concatenate(list(contributions.values())), quantile))
    return tau, {name: int((c > tau).sum()) for name, c in contributions.items()}


def plot_histograms(contributions: dict[str, np.ndarray], path: Path, *, bins: int = 30, title: str = "") -> None:
    """Overlaid step histograms of C (fraction of units per bin), one per model, on shared bins."""
    plt = pyplot()
    edges = np.linspace(0.0, max(float(c.max()) for c in contributions.values()), bins + 1)
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    colors = plt.get_cmap("tab10").colors
    for i, (name, c) in enumerate(contributions.items()):
        ax.hist(
            c,
            bins=edges,
            weights=np.full(c.size, 1.0 / c.size),
            histtype="step",
            lw=1.8,
            color=colors[i % 10],
            label=f"{name} (mean {c.mean():.3g})",
        )
    ax.set_xlabel("feature contribution C = mean |∂CE/∂A_fc|")
    ax.set_ylabel("fraction of units")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)


@ANALYSES.register("feature_contribution")
def run_feature_contribution(
    ctx: AnalysisContext,
    split: Literal["test", "val", "train"] = "test",
    n: int | None = None,
    inputs: Literal["clean", "adv"] = "clean",
    attack: str = "pgd-10",
    bins: int = 30,
    batch_size: int = 500,
) -> dict[str, Any]:
    """C per unit of the features on `n` points of `split` (clean, or adversarial under `attack`), its
    summary and a histogram (figures/feature_contribution.png)."""
    data = ctx.dataset.split(split).head(n).to(ctx.device)
    if inputs == "adv":
        data = adversarial_split(ctx.model, data, attack, ctx.threat, seed=ctx.seed, batch_size=batch_size)
    c = feature_contribution(ctx.model, data, batch_size=batch_size).cpu().numpy()
    plot_histograms(
        {ctx.run_dir.name: c},
        ctx.figure_path("feature_contribution.png"),
        bins=bins,
        title=f"feature contribution on {inputs} {split} points (n = {len(data)})",
    )
    return {
        "split": split,
        "n": len(data),
        "inputs": inputs,
        "attack": attack if inputs == "adv" else None,
        "dim": int(c.size),
        **summarize(c),
        "contribution": c.tolist(),
    }
