"""CCA between visual features and class word vectors (SCARL: Robustness Exploration of Semantic Information in
Adversarial Training, ICLR 2023 submission, OpenReview SWUGykek_T, Fig. 1).

For n seeded test images (500 as in the paper) the pairs are (h(x_i), t_{y_i}): h = forward_features, t
the class word vectors (`robustlab.semantic`). Two settings: natural images, and the same images after
PGD at the run's threat model. The paper's claim: an attack destroys the correlation, adversarial training
restores it ("the more robust the model, the stronger the correlation").

Unregularised CCA of 500 pairs of 100s-dimensional features is ≈ 1 for any model, so each view is first
reduced to its top `dim` principal components (default 5; the word side also to at most its rank,
≤ K − 1 after centring), and/or the covariances get a ridge `reg` · (mean variance) · I.
Note: with `dim` ≥ K − 1 the word side spans the same space as one-hot labels (for full-rank word
vectors), so the canonical correlations then measure linear class separability, not word semantics;
a small `dim` keeps only the leading directions of the word-vector geometry. The `controls` repeat the
CCA with random class vectors: the part of the correlation that the word semantics do not explain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..models import ContractModel
from .registry import ANALYSES, AnalysisContext


def pca_scores(x: np.ndarray, dim: int | None) -> np.ndarray:
    """Centred x (n×p) projected on its top `dim` principal components (all when None), dropping
    directions with no variance (relative singular value < 1e-6)."""
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    keep = s > 1e-6 * max(s[0], 1e-30)
    if dim is not None:
        keep[dim:] = False
    return u[:, keep] * s[keep]


def _inverse_sqrt(c: np.ndarray) -> np.ndarray:
    """C^{-1/2} of a symmetric PSD matrix, eigenvalues floored at 1e-12 of the largest: relative, so that the
    canonical correlations do not depend on the scale of the features."""
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.clip(w, 1e-12 * max(w.max(initial=0.0), 1e-300), None))) @ v.T


@dataclass
class CCAResult:
    correlations: np.ndarray  # (k,) descending canonical correlations
    x_variates: np.ndarray  # n×k canonical variates of the first view
    y_variates: np.ndarray  # n×k canonical variates of the second view


def cca(x: np.ndarray, y: np.ndarray, *, dim: int | None = 5, reg: float = 0.0) -> CCAResult:
    """Canonical correlation analysis of views x (n×p) and y (n×q), each PCA-reduced to `dim` components.

    With covariances C (ridge: C_xx + reg · tr(C_xx)/p · I, the same for y), the canonical correlations are
    the singular values of C_xx^{-1/2} C_xy C_yy^{-1/2}, and the variates x C_xx^{-1/2} U, y C_yy^{-1/2} V.
    """
    xr, yr = pca_scores(np.asarray(x, np.float64), dim), pca_scores(np.asarray(y, np.float64), dim)
    n = xr.shape[0]
    cxx, cyy, cxy = xr.T @ xr / (n - 1), yr.T @ yr / (n - 1), xr.T @ yr / (n - 1)
    cxx = cxx + reg * np.trace(cxx) / len(cxx) * np.eye(len(cxx))
    cyy = cyy + reg * np.trace(cyy) / len(cyy) * np.eye(len(cyy))
    wx, wy = _inverse_sqrt(cxx), _inverse_sqrt(cyy)
    u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
    return CCAResult(np.clip(s, 0.0, 1.0), xr @ wx @ u, yr @ wy @ vt.T)


@torch.no_grad()
def features(model: ContractModel, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """forward_features of x (N×C×H×W) in batches, N×D on the CPU."""
    return torch.cat([model.forward_features(x[i : i + batch_size]).cpu() for i in range(0, len(x), batch_size)])


def run_vectors(meta: dict[str, Any]) -> str:
    """The word vectors a run trained with (a scarl run's `vectors`), else the default `minilm`."""
    method = meta.get("method") or {}
    return str((method.get("options") or {}).get("vectors", "minilm")) if method.get("name") == "scarl" else "minilm"


def sample(ctx: AnalysisContext, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """n images and labels drawn without replacement from `split` with the analysis seed (all when n ≥ size)."""
    s = ctx.dataset.split(split)
    idx = torch.randperm(len(s), generator=torch.Generator().manual_seed(ctx.seed))[: n or len(s)]
    return s.x[idx].to(ctx.device), s.y[idx].to(ctx.device)


def adversarial(
    ctx: AnalysisContext, x: torch.Tensor, y: torch.Tensor, attack: str, batch_size: int = 500
) -> torch.Tensor:
    """x attacked by `attack` (a spec, e.g. pgd-20) at the run's threat model, in batches."""
    from ..attacks import build

    atk = build(attack, ctx.threat, seed=ctx.seed)
    return torch.cat(
        [atk(ctx.model, x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    )


@ANALYSES.register("cca")
def cca_analysis(
    ctx: AnalysisContext,
    vectors: str | None = None,
    n: int = 500,
    dim: int = 5,
    reg: float = 0.0,
    attack: str = "pgd-20",
    split: str = "test",
    controls: int = 5,
    figure: bool = True,
) -> dict[str, Any]:
    """CCA of forward_features vs class word vectors for `n` seeded natural and PGD images (paper Fig. 1).

    vectors: word-vector source (default: the run's scarl vectors, else minilm); dim: PCA components per view
    (0 = no reduction); reg: ridge on the covariances; attack: the attack spec at the run's threat model;
    controls: number of draws of random Gaussian class vectors (same shape, seeded) whose mean first canonical
    correlation is the control: what CCA gives for class labels without word semantics.
    """
    from ..semantic import class_vectors

    spec = vectors or run_vectors(ctx.meta)
    words = class_vectors(spec, ctx.dataset.class_names).numpy()
    ctx.model.eval()
    x, y = sample(ctx, split, n)
    x_adv = adversarial(ctx, x, y, attack)
    out: dict[str, Any] = {
        "vectors": spec,
        "n": len(y),
        "dim": dim,
        "reg": reg,
        "attack": attack,
        "split": split,
        "threat": str(ctx.threat),
        "seed": ctx.seed,
    }
    rng = np.random.default_rng(ctx.seed)
    random_words = [rng.normal(size=words.shape) for _ in range(controls)]
    labels = y.cpu().numpy()
    results = {}
    for setting, images in (("natural", x), ("adversarial", x_adv)):
        z = features(ctx.model, images)
        with torch.no_grad():  # from the logits, not forward_head(z): an outside model's z may be any named layer
            acc = float((torch.cat([ctx.model(b) for b in images.split(500)]).argmax(1) == y).float().mean())
        res = cca(z.numpy(), words[labels], dim=dim or None, reg=reg)
        results[setting] = res
        control = [cca(z.numpy(), w[labels], dim=dim or None, reg=reg).correlations[0] for w in random_words]
        out[setting] = {
            "correlations": [float(c) for c in res.correlations],
            "first": float(res.correlations[0]),
            "control_first": float(np.mean(control)) if control else None,
            "accuracy": acc,
        }
    if figure:
        out["figure"] = str(_scatter(results, y.cpu().numpy(), ctx.figure_path("cca.png"), ctx.dataset.class_names))
    return out


def _scatter(results: dict[str, CCAResult], y: np.ndarray, path, class_names: list[str]):
    """First visual vs first word canonical variate per setting, coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    fig, axes = plt.subplots(1, len(results), figsize=(4.0 * len(results), 3.6), squeeze=False)
    for ax, (setting, res) in zip(axes[0], results.items()):
        for c in np.unique(y):
            m = y == c
            ax.scatter(
                res.x_variates[m, 0], res.y_variates[m, 0], s=7, alpha=0.6, color=colors[c % 10], label=class_names[c]
            )
        ax.set_title(f"{setting}: r₁ = {res.correlations[0]:.3f}")
        ax.set_xlabel("visual canonical variate 1")
        ax.set_ylabel("word canonical variate 1")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
