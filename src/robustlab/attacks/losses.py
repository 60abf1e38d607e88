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


def kl_to_reference(logits: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ softmax(logits)) per sample: the TRADES inner loss with p_ref the clean output."""
    return F.kl_div(F.log_softmax(logits, 1), ref_log_probs, reduction="none", log_target=True).sum(1)
