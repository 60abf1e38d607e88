"""Cross-category KL (CCKL) of Shi et al., its Jensen–Shannon lower bounds, and its split into the
non-robust (Fisher) and robust components (`robustlab analyze RUN --what cckl`).

    CCKL(θ) = (1/N) Σ_{(i,j): y_i ≠ y_j} KL( p(·|x_i) ‖ p(·|x_j) )              (Shi et al., arXiv 1906.02494, Eq. 1)

over all N ordered pairs of samples with different labels, computed exactly from the N×K
log-probabilities: KL_ij = Σ_k p_ik log p_ik − Σ_k p_ik log p_jk is affine in each index, so per-class
sums give the whole double sum in O(N·K) (10,000 samples in milliseconds; no N×N matrix).

Lower bounds (our derivation: the paper's displayed formula is not legible in the text we have):
  (a) Lin (1991): JS(P,Q) ≤ ¼ [KL(P‖Q) + KL(Q‖P)]. Summed over ordered pairs, where every unordered
      pair appears in both directions, this gives  CCKL ≥ 2 · mean_{ordered pairs} JS(p_i, p_j).
      The constant is 2 because the ordered-pair mean of KL already counts both directions once each.
  (b) √JS is a metric and JS(q_i, q_j) = log 2 for one-hot labels of different classes, so
      √JS(p_i,p_j) ≥ √log 2 − √JS(q_i,p_i) − √JS(q_j,p_j), and
      CCKL ≥ 2 · mean [max(0, √log 2 − a_i − a_j)]²  with  a_i = √JS(q_i, p_i) a function of p_i(y_i) alone:
      JS(q, p) = ½ [log(2/(1+p_y)) + p_y log(2 p_y/(1+p_y)) + (1 − p_y) log 2].
      As the cross-entropy falls this rises towards 2 log 2 (the bound the paper relates to training).
  Both bounds are ≤ CCKL, and (b) ≤ (a) pair by pair. (b) costs N² additions and is exact; (a) costs
  N²·K logarithms and is estimated over seeded anchor rows for large N.

Decomposition (Shi et al. Eq. 10–11): with Δ = x_j − x_i,
  KL(p_i ‖ p_j) = ½ Δᵀ F(x_i) Δ + R_ij,
where ½ΔᵀFΔ = ½ Var_{k~p_i}[(JΔ)_k] uses the Jacobian-vector product JΔ (F = Jᵀ(diag p − ppᵀ)J). The
mean of the quadratic term is the non-robust component, the mean remainder R the robust one. Pairs of
real images are far apart, so the expansion is not small: the quadratic term can exceed the KL and R
can be negative; we report the numbers as they come. They are estimated over a seeded sample of pairs:
`anchors` samples i, each with `partners` random samples j of another class (one Jacobian per anchor).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.fisher import logit_jacobian
from ..models import eval_mode
from .figures import pyplot, save_figure
from .registry import ANALYSES, AnalysisContext

LOG2 = math.log(2.0)


def predict_log_probs(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """log softmax of the model's logits in float64, N×K (model in eval mode, no gradients)."""
    with eval_mode(model), torch.no_grad():
        return torch.cat([F.log_softmax(model(xb).double(), 1) for xb in x.split(batch_size)])


def _cross_pair_mean(
    pair_fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, rows: torch.Tensor, block: int
) -> float:
    """Mean of pair_fn(r) (a len(r)×N matrix for row indices r) over the ordered pairs (i, j), i in `rows`,
    with y_i ≠ y_j."""
    total = torch.zeros((), dtype=torch.float64, device=y.device)
    count = 0
    for r in rows.split(block):
        cross = y[r, None] != y[None, :]
        total = total + pair_fn(r).masked_fill(~cross, 0.0).sum()
        count += int(cross.sum())
    return float(total / count) if count else float("nan")


def cckl(log_probs: torch.Tensor, y: torch.Tensor) -> float:
    """Exact CCKL (see module doc) from N×K log-probabilities and labels (N,), in O(N·K).

    KL_ij = h_i − p_i·log p_j with h_i = Σ_k p_ik log p_ik is affine in each index, so the sum over all
    ordered pairs of different classes follows from per-class sums: for class c with n_c samples,
    Σ_{i∈c, j∉c} KL_ij = (N − n_c)·Σ_{i∈c} h_i − (Σ_{i∈c} p_i)·(Σ_{j∉c} log p_j). No N×N matrix is formed.
    """
    lp = log_probs.double()
    p = lp.exp()
    h = torch.xlogy(p, p).sum(1)  # Σ p log p, with 0 log 0 = 0
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    n = y.shape[0]
    h_c = torch.zeros(len(classes), dtype=lp.dtype, device=lp.device).index_add_(0, inverse, h)
    p_c = torch.zeros(len(classes), lp.shape[1], dtype=lp.dtype, device=lp.device).index_add_(0, inverse, p)
    lp_c = torch.zeros_like(p_c).index_add_(0, inverse, lp)
    lp_other = lp.sum(0) - lp_c
    total = ((n - counts) * h_c).sum() - (p_c * lp_other).sum()
    pairs = int(n * n - (counts * counts).sum())
    return float(total / pairs) if pairs else float("nan")


def js_to_label(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """JS(q_i, p_i) for one-hot q_i at y_i, per sample (N,)."""
    py = log_probs.double().gather(1, y[:, None]).squeeze(1).exp()
    return 0.5 * (LOG2 - torch.log1p(py) + torch.xlogy(py, 2 * py / (1 + py)) + (1 - py) * LOG2)


def label_js_bound(log_probs: torch.Tensor, y: torch.Tensor, block: int = 512) -> float:
    """Bound (b) of the module doc, exact over all ordered cross-category pairs (N² additions)."""
    a = js_to_label(log_probs, y).clamp_min(0).sqrt()

    def term(r: torch.Tensor) -> torch.Tensor:
        return (math.sqrt(LOG2) - a[r, None] - a[None, :]).clamp_min(0).square()

    return 2 * _cross_pair_mean(term, y, torch.arange(y.shape[0], device=y.device), block)


def pairwise_js_bound(
    log_probs: torch.Tensor, y: torch.Tensor, *, rows: int | None = None, seed: int = 0, block: int = 64
) -> float:
    """Bound (a) of the module doc, 2·mean JS(p_i, p_j). It costs N²·K logarithms, so with `rows` < N it
    is averaged over `rows` seeded anchor samples i against all j (an estimate); None: exact."""
    lp = log_probs.double()
    p = lp.exp()
    h = torch.xlogy(p, p).sum(1)
    n = y.shape[0]

    def js(r: torch.Tensor) -> torch.Tensor:
        m = 0.5 * (p[r, None, :] + p[None, :, :])  # b×N×K
        return 0.5 * (h[r, None] + h[None, :]) - torch.xlogy(m, m).sum(2)

    if rows is None or rows >= n:
        sampled = torch.arange(n, device=y.device)
    else:
        sampled = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows].to(y.device)
    return 2 * _cross_pair_mean(js, y, sampled, block)


def sample_cross_pairs(
    y: torch.Tensor, anchors: int, partners: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchor indices A, partner indices A×P): seeded anchors without replacement, and for each
    `partners` distinct samples of another class (P = min(partners, fewest other-class samples))."""
    n = y.shape[0]
    idx = torch.randperm(n, generator=generator)[: min(anchors, n)].to(y.device)
    scores = torch.rand(len(idx), n, generator=generator).to(y.device)
    same = y[idx, None] == y[None, :]
    scores = scores.masked_fill(same, -1.0)
    k = min(partners, int((~same).sum(1).min()))
    return idx, scores.topk(k, dim=1).indices


def cckl_decomposition(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    log_probs: torch.Tensor,
    *,
    anchors: int = 64,
    partners: int = 256,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """Per-pair KL, quadratic Fisher term ½ΔᵀF(x_i)Δ and remainder over a seeded sample of pairs.

    x: N×C×H×W, y: N, log_probs: the model's N×K log-probabilities of x. Returns float64 tensors of
    shape A×P: "kl", "fisher" (the quadratic term), "remainder", plus "anchor" (A,) and "partner" (A×P).
    """
    gen = torch.Generator().manual_seed(seed)
    anchor, partner = sample_cross_pairs(y, anchors, partners, gen)
    lp = log_probs.double()
    p = lp.exp()
    quad = []
    flat = x.flatten(1)
    for start in range(0, len(anchor), batch_size):
        a, b = anchor[start : start + batch_size], partner[start : start + batch_size]
        _, jac = logit_jacobian(model, x[a])  # A'×K×n
        jvp = torch.einsum("akn,apn->apk", jac, flat[b] - flat[a, None, :]).double()  # JΔ, A'×P×K
        pa = p[a, None, :]
        quad.append(0.5 * ((pa * jvp.square()).sum(2) - (pa * jvp).sum(2).square()))
    fisher = torch.cat(quad) if quad else torch.zeros(0, partner.shape[1], dtype=torch.float64)
    kl = (p[anchor, None, :] * (lp[anchor, None, :] - lp[partner])).sum(2)
    return {"anchor": anchor, "partner": partner, "kl": kl, "fisher": fisher, "remainder": kl - fisher}


def cckl_summary(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    anchors: int = 64,
    partners: int = 256,
    pairwise_js: bool = True,
    js_rows: int | None = 1000,
    seed: int = 0,
    batch_size: int = 256,
    figure: Path | None = None,
) -> dict[str, Any]:
    """Accuracy, exact CCKL, its label-JS lower bound, the pairwise-JS bound (when `pairwise_js`, over
    `js_rows` seeded anchors) and the sampled Fisher / remainder decomposition, as plain floats;
    `figure`: also draw KL against ½ΔᵀFΔ per sampled pair there."""
    t0 = time.perf_counter()
    lp = predict_log_probs(model, x, batch_size)
    out: dict[str, Any] = {
        "n": int(x.shape[0]),
        "accuracy": float((lp.argmax(1) == y).double().mean()),
        "cckl": cckl(lp, y),
    }
    out["bound_label_js"] = label_js_bound(lp, y)
    if pairwise_js:
        out["bound_pairwise_js"] = pairwise_js_bound(lp, y, rows=js_rows, seed=seed)
    d = cckl_decomposition(model, x, y, lp, anchors=anchors, partners=partners, seed=seed)
    kl, fisher = d["kl"].flatten(), d["fisher"].flatten()
    out.update(
        {
            "seed": seed,
            "anchors": int(d["anchor"].numel()),
            "pairs": int(kl.numel()),
            "cckl_sampled": float(kl.mean()),
            "fisher_term": float(fisher.mean()),
            "remainder": float((kl - fisher).mean()),
            "pairs_fisher_exceeds_kl": float((fisher > kl).double().mean()),
            "seconds": time.perf_counter() - t0,
        }
    )
    if figure is not None:
        _pair_figure(kl.cpu(), fisher.cpu(), figure, title=f"{out['pairs']} sampled cross-category pairs")
    return out


@ANALYSES.register("cckl")
def cckl_analysis(
    ctx: AnalysisContext,
    split: str = "test",
    n: int | None = None,
    anchors: int = 64,
    partners: int = 256,
    js_rows: int | None = 1000,
    batch_size: int = 256,
) -> dict[str, Any]:
    """CCKL over all cross-category pairs of the split (its first `n` samples), its two JS lower bounds,
    (the pairwise-JS one over `js_rows` seeded anchors when the split is larger), and the Fisher /
    remainder decomposition over `anchors` × `partners` seeded pairs (figure
    figures/cckl_pairs.png: KL against ½ΔᵀFΔ per pair)."""
    data = ctx.dataset.split(split).head(n).to(ctx.device)
    return {
        "split": split,
        **cckl_summary(
            ctx.model,
            data.x,
            data.y,
            anchors=anchors,
            partners=partners,
            js_rows=js_rows,
            seed=ctx.seed,
            batch_size=batch_size,
            figure=ctx.figure_path("cckl_pairs.png"),
        ),
    }


def _pair_figure(kl: torch.Tensor, fisher: torch.Tensor, path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    lo = float(torch.cat([kl, fisher]).clamp_min(1e-6).min())
    hi = float(torch.cat([kl, fisher]).max())
    ax.scatter(fisher.clamp_min(1e-6), kl.clamp_min(1e-6), s=3, alpha=0.3, rasterized=True)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="KL = ½ΔᵀFΔ")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("½ ΔᵀF(x_i)Δ (non-robust term; < 1e-6 drawn at 1e-6)")
    ax.set_ylabel("KL(p_i ‖ p_j)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
