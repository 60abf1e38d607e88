"""Saliency maps: the input gradient of the true-class logit, ∇_x f_y(x) (Simonyan et al. 2014), as
Zhu, Zhang & Evans (ICML 2020, arXiv 2002.11798; following Etmann et al. 2019) use to compare baseline and
robust representations.

For a linear classifier on a frozen representation, f_y(x) = w_yᵀ g(x) + b_y, so the map is J_g(x)ᵀ w_y:
a direction-specific saliency of the representation g itself [inferred] the paper text does not say
which scalar of the representation it differentiates. `alignment` is Etmann et al.'s measure of
how image-like a map is, here as a cosine: |<x, ∇>| / (‖x‖ ‖∇‖), in [0, 1]; `background_share` is
the share of the map's energy on the dark background (for digits: off the stroke).
`robustlab analyze RUN --what saliency` writes RUN/figures/saliency.png for one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.base import model_untouched
from .figures import pyplot, save_figure
from .registry import ANALYSES, AnalysisContext


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇_x f_y(x) for each sample (model in eval mode, left untouched); N×C×H×W."""
    with model_untouched(model, "eval"):
        x = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    return grad


def alignment(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """|<x, ∇>| / (‖x‖ ‖∇‖) per sample, shape (N,)."""
    a, b = x.flatten(1), grad.flatten(1)
    return (a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def background_share(x: torch.Tensor, grad: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Share of the squared gradient on background pixels (every channel ≤ `threshold`), per sample (N,).

    A direct measure of how much of a map is "noise" off the object, for dark-background images (digits)."""
    background = (x <= threshold).all(dim=1, keepdim=True).expand_as(grad)
    energy = grad.pow(2)
    return (energy * background).flatten(1).sum(1) / energy.flatten(1).sum(1).clamp_min(1e-24)


def saliency_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], path: Path, title: str = "") -> None:
    """First row the images, then one row per entry of `maps` (N×C×H×W gradients), as a PNG.

    One-channel maps are shown signed (red positive, blue negative), each scaled by its own largest
    magnitude; colour maps are shown as the per-pixel gradient norm.
    """
    plt = pyplot()
    n = images.shape[0]
    rows = [("input", images), *maps.items()]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.4, 1.15 * len(rows)), squeeze=False)
    for r, (label, t) in enumerate(rows):
        t = t.detach().cpu().float()
        for i in range(n):
            ax = axes[r][i]
            if r == 0:
                img = t[i].permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(img, cmap="gray" if t.shape[1] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
            elif t.shape[1] == 1:
                m = t[i, 0] / t[i, 0].abs().max().clamp_min(1e-12)
                ax.imshow(m.numpy(), cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
            else:
                m = t[i].norm(dim=0)
                ax.imshow((m / m.max().clamp_min(1e-12)).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def first_per_class(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of up to `n` samples, cycling through the classes in order (0, 1, 2, ...)."""
    classes = torch.unique(y)
    firsts = [torch.nonzero(y == c).flatten() for c in classes]
    picked = [f[k] for k in range(max(len(f) for f in firsts)) for f in firsts if k < len(f)]
    return torch.stack(picked[:n])


@ANALYSES.register("saliency")
def saliency(ctx: AnalysisContext, n: int = 10) -> dict[str, Any]:
    """Input gradients of the true-class logit for `n` test images (one per class first); writes
    figures/saliency.png."""
    test = ctx.dataset.test
    idx = first_per_class(test.y, n)
    x, y = test.x[idx].to(ctx.device), test.y[idx].to(ctx.device)
    grad = input_gradients(ctx.model, x, y)
    path = ctx.figure_path("saliency.png")
    saliency_grid(x, {ctx.run_dir.name: grad}, path)
    return {
        "figure": str(path),
        "n": len(idx),
        "alignment_mean": float(alignment(x, grad).mean()),
        "background_share_mean": float(background_share(x, grad).mean()),
    }
