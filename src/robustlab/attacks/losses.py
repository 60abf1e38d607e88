"""Per-sample attack losses on logits (N×K) -> (N,). The attack maximises them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """Carlini–Wagner margin max_{j≠y} z_j − z_y, capped at kappa (Madry et al.'s CW-loss PGD)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (other - z_y).clamp(max=kappa)


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020, Eq. 6): -(z_y - max_{i≠y} z_i) / (z_π1 - z_π3).

    π sorts the logits in decreasing order; the ratio is invariant to shifting and scaling the
    logits, so it does not saturate like the cross-entropy. Needs at least 3 classes.
    """
    top = logits.sort(1, descending=True).values
    return cw_margin(logits, y, float("inf")) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, Eq. 7): -(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2). Needs 4 classes."""
    top = logits.sort(1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def kl_to_reference(logits: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ softmax(logits)) per sample: the TRADES inner loss with p_ref the clean output."""
    return F.kl_div(F.log_softmax(logits, 1), ref_log_probs, reduction="none", log_target=True).sum(1)
