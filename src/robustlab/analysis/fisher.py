"""Input Fisher information per sample, and the Fisher attack checked against its Taylor prediction
(`robustlab analyze RUN --what fisher`).

Trace, Frobenius norm and spectral norm of F(x) = Jᵀ(diag p − ppᵀ)J with respect to the [0, 1] pixels
(normalisation is inside the model) are computed exactly from K×K matrices (see
`robustlab.attacks.fisher`); Shi et al. plot the mean Frobenius norm over the test set (Fig. 3–4), the
spectral norm is the one that bounds the adversarial KL (Eq. 8):

    max_{‖δ‖₂ = ε} KL(p(x) ‖ p(x+δ)) = ½ ε² λ_max(F(x)) + O(ε³).

The analysis checks that relation on the model (ratio of the KL along ±u, unclipped, to ½ε²λ_max) and
compares the Fisher attack (clipped to [0, 1]) with a random direction of the same length.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.fisher import InputFisher, fisher_step, input_fisher
from ..threat import per_sample
from .figures import pyplot, save_figure
from .registry import ANALYSES, AnalysisContext


def fisher_norms(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Per-sample "trace", "frobenius", "spectral" and "rank" of F(x) (float64, shape N) for x N×C×H×W.

    "rank" counts eigenvalues above 1e-10 × the largest (never more than K − 1). The model is run in
    eval mode and left untouched.
    """
    parts = [input_fisher(model, xb, direction=False) for xb in x.split(batch_size)]
    fi = InputFisher(torch.cat([p.logits for p in parts]), torch.cat([p.eigenvalues for p in parts]), None)
    rank = (fi.eigenvalues > 1e-10 * fi.spectral[:, None].clamp_min(1e-300)).sum(1).double()
    return {"trace": fi.trace, "frobenius": fi.frobenius, "spectral": fi.spectral, "rank": rank}


def fisher_attack_check(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], *, seed: int = 0, batch_size: int = 128
) -> list[dict[str, float]]:
    """Per l2 radius ε: the Taylor check and the Fisher attack against a random direction (see module doc).

    Keys: "taylor_ratio_median" (and q10, q90; KL along the better of ±u without clipping / ½ε²λ_max),
    "kl_fisher" and "kl_random" (mean KL after clipping to [0, 1]; the random direction, one seeded
    Gaussian direction per sample, also gets the better sign), "fisher_ge_random" (share of samples
    with KL_fisher ≥ KL_random), "flip_fisher" and "flip_random" (share of the clean-correct samples
    whose prediction changes).
    """
    gen = torch.Generator().manual_seed(seed)
    rows: dict[float, dict[str, list[torch.Tensor]]] = {e: {} for e in eps}
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        fi = input_fisher(model, xb)
        clean = F.log_softmax(fi.logits.double(), 1)
        correct = fi.logits.argmax(1) == yb
        rnd = torch.randn(xb.shape, generator=gen, dtype=xb.dtype).to(xb.device)
        rnd = rnd / per_sample(rnd.flatten(1).norm(dim=1), xb)
        assert fi.direction is not None  # input_fisher computes it unless asked not to
        for e in eps:
            _, _, kl_taylor = fisher_step(model, xb, fi.direction, e, clean, clip=False)
            _, z_f, kl_f = fisher_step(model, xb, fi.direction, e, clean)
            _, z_r, kl_r = fisher_step(model, xb, rnd, e, clean)
            r = rows[e]
            for key, v in (
                ("taylor", kl_taylor / (0.5 * e * e * fi.spectral).clamp_min(1e-300)),
                ("kl_fisher", kl_f),
                ("kl_random", kl_r),
                ("ge", kl_f >= kl_r),
                ("flip_fisher", (z_f.argmax(1) != yb)[correct]),
                ("flip_random", (z_r.argmax(1) != yb)[correct]),
            ):
                r.setdefault(key, []).append(v.double().cpu())
    out = []
    for e in eps:
        cat: dict[str, torch.Tensor] = {k: torch.cat(v) for k, v in rows[e].items()}
        out.append(
            {
                "eps": e,
                "taylor_ratio_median": float(cat["taylor"].quantile(0.5)),
                "taylor_ratio_q10": float(cat["taylor"].quantile(0.1)),
                "taylor_ratio_q90": float(cat["taylor"].quantile(0.9)),
                "kl_fisher": float(cat["kl_fisher"].mean()),
                "kl_random": float(cat["kl_random"].mean()),
                "fisher_ge_random": float(cat["ge"].mean()),
                "flip_fisher": float(cat["flip_fisher"].mean()),
                "flip_random": float(cat["flip_random"].mean()),
            }
        )
    return out


def summarize(values: torch.Tensor) -> dict[str, float]:
    """mean, median, 10% and 90% quantiles of a 1-d tensor (the median of an even count is the mean of
    the two middle values; torch's `median` would return the lower one)."""
    v = values.double().cpu()
    return {
        "mean": float(v.mean()),
        "median": float(v.quantile(0.5)),
        "q10": float(v.quantile(0.1)),
        "q90": float(v.quantile(0.9)),
    }


@ANALYSES.register("fisher")
def fisher_analysis(
    ctx: AnalysisContext,
    split: str = "test",
    n: int | None = 512,
    batch_size: int = 128,
    eps: tuple[float, ...] = (0.01, 0.1, 0.3, 1.0),
) -> dict[str, Any]:
    """Trace / Frobenius / spectral norm of the input Fisher on the first `n` samples of `split`, and the
    Fisher attack at each l2 radius in `eps` (Taylor ratio, KL against a random direction, flips).
    Figure figures/fisher.png: the distribution of spectral norms and KL against ε."""
    data = ctx.dataset.split(split).head(n).to(ctx.device)
    t0 = time.perf_counter()
    norms = fisher_norms(ctx.model, data.x, batch_size)
    seconds_norms = time.perf_counter() - t0
    attack = fisher_attack_check(ctx.model, data.x, data.y, list(eps), seed=ctx.seed, batch_size=batch_size)
    result = {
        "split": split,
        "n": len(data),
        "num_classes": ctx.dataset.num_classes,
        **{k: summarize(norms[k]) for k in ("trace", "frobenius", "spectral")},
        "max_rank": int(norms["rank"].max()),
        "spectral_over_frobenius": summarize(norms["spectral"] / norms["frobenius"].clamp_min(1e-300)),
        "attack": attack,
        "seconds_norms": seconds_norms,
        "seconds": time.perf_counter() - t0,
    }
    _figure(norms["spectral"], attack, ctx.figure_path("fisher.png"), ctx.run_dir.name)
    return result


def _figure(spectral: torch.Tensor, attack: list[dict[str, float]], path: Path, name: str) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    a.hist(spectral.clamp_min(1e-12).log10().cpu().numpy(), bins=40)
    a.set_xlabel("log10 ‖F(x)‖₂ (spectral norm)")
    a.set_ylabel("samples")
    a.grid(alpha=0.3)
    e = [r["eps"] for r in attack]
    b.plot(e, [r["kl_fisher"] for r in attack], "o-", label="Fisher attack")
    b.plot(e, [r["kl_random"] for r in attack], "s-", label="random direction")
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("l2 radius ε")
    b.set_ylabel("mean KL(p(x) ‖ p(x+δ))")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle(name, fontsize=9)
    save_figure(fig, path)
