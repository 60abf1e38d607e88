"""Grad-CAM (Selvaraju et al. 2017; Wu et al., AALP, arXiv 2005.11904, Eq. 6, Figs. 2 and 8) of adversarial examples.

    α_k = mean_{u,v} ∂z_c/∂M_k,uv ;   CAM = ReLU( Σ_k α_k M_k )   upsampled (bilinear) to the input size

with M = model.forward_map(x) the last spatial feature map and z_c the logit of class c (the true label
by default, or the predicted class). Maps are non-negative and have the input's spatial shape. The
paper's claim: the more robust the model, the smaller the area its adversarial-example maps highlight.
`active_area` = the mean fraction of pixels whose map is at least half of that image's maximum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Split
from ..errors import RobustlabError
from ..models import ContractModel, eval_mode
from ..threat import ThreatModel
from .contribution import adversarial_split
from .figures import pyplot, save_figure
from .registry import ANALYSES, AnalysisContext

FIGURE_COLUMNS = 16


def grad_cam(model: ContractModel, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (N×H×W, ≥ 0) of images x (N×C×H×W) for the logit of `classes` (N,)."""
    if not hasattr(model, "neck"):
        raise RobustlabError(
            f"Grad-CAM needs a model built as Normalize -> body -> neck -> head; got {type(model).__name__}."
        )
    with torch.enable_grad():
        fmap = model.forward_map(x).detach().requires_grad_(True)
        logits = model.forward_head(model.neck(fmap))
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), fmap)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * fmap.detach()).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0.0)[:, 0]


def normalized(cams: torch.Tensor) -> torch.Tensor:
    """Each map divided by its maximum (all-zero maps stay zero), N×H×W in [0, 1]."""
    peak = cams.flatten(1).amax(1).clamp_min(1e-12)
    return cams / peak[:, None, None]


def active_area(cams: torch.Tensor) -> float:
    """Mean over images of the fraction of pixels with map ≥ half the image's maximum (0 for all-zero maps)."""
    nonzero = cams.flatten(1).amax(1) > 0
    frac = (normalized(cams) >= 0.5).flatten(1).float().mean(1)
    return float((frac * nonzero).mean())


def adversarial_cams(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    attack: str | dict,
    *,
    seed: int = 0,
    target: Literal["label", "pred"] = "label",
) -> dict[str, torch.Tensor]:
    """Adversarial examples of x under `attack`, their predictions and Grad-CAM maps (model in eval mode)."""
    with eval_mode(model):
        x_adv = adversarial_split(model, Split(x, y), attack, threat, seed=seed).x
        with torch.no_grad():
            pred = model(x_adv).argmax(1)
        cams = grad_cam(model, x_adv, y if target == "label" else pred)
    return {"x_adv": x_adv, "pred": pred, "cam": cams}


def plot_gradcam_grid(x: torch.Tensor, y: torch.Tensor, rows: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """Row 0: the clean images; then one row per model: its adversarial image with its Grad-CAM overlaid,
    titled with the model's prediction on it (green = still correct, red = fooled)."""
    plt = pyplot()
    n = x.shape[0]
    names = list(rows)
    fig, axes = plt.subplots(1 + len(names), n, figsize=(1.15 * n + 1.2, 1.2 * (1 + len(names))), squeeze=False)

    def show(ax, img: torch.Tensor) -> None:
        img = img.detach().cpu()
        ax.imshow(
            (img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(),
            cmap="gray",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )

    for j in range(n):
        show(axes[0][j], x[j])
        axes[0][j].set_title(f"y={int(y[j])}", fontsize=8)
        for i, name in enumerate(names, start=1):
            r = rows[name]
            show(axes[i][j], r["x_adv"][j])
            axes[i][j].imshow(
                normalized(r["cam"][j : j + 1])[0].cpu().numpy(),
                cmap="jet",
                alpha=0.5,
                vmin=0,
                vmax=1,
                interpolation="bilinear",
            )
            ok = int(r["pred"][j]) == int(y[j])
            axes[i][j].set_title(f"→{int(r['pred'][j])}", fontsize=8, color="green" if ok else "red")
    for i, ax_row in enumerate(axes):
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel("clean" if i == 0 else names[i - 1], fontsize=8, rotation=0, ha="right", va="center")
    save_figure(fig, path)


@ANALYSES.register("gradcam")
def run_gradcam(
    ctx: AnalysisContext,
    split: Literal["test", "val", "train"] = "test",
    n: int = 8,
    attack: str = "pgd-10",
    target: Literal["label", "pred"] = "label",
) -> dict[str, Any]:
    """Grad-CAM of the adversarial examples of the first `n` points of `split`; the figure
    (figures/gradcam.png) shows the first FIGURE_COLUMNS of them."""
    data = ctx.dataset.split(split).head(n).to(ctx.device)
    r = adversarial_cams(ctx.model, data.x, data.y, ctx.threat, attack, seed=ctx.seed, target=target)
    k = FIGURE_COLUMNS
    plot_gradcam_grid(
        data.x[:k], data.y[:k], {ctx.run_dir.name: {key: v[:k] for key, v in r.items()}}, ctx.figure_path("gradcam.png")
    )
    return {
        "split": split,
        "n": len(data),
        "attack": attack,
        "target": target,
        "active_area": active_area(r["cam"]),
        "adv_correct": float((r["pred"] == data.y).float().mean()),
        "cam": np.round(normalized(r["cam"]).cpu().numpy(), 4).tolist(),
    }
