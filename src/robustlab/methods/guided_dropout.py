"""Guided Dropout (Wu et al., AALP, arXiv 2005.11904, §3.1) on the layer before the logits,
A_fc = model.forward_features(x).

    R = mean_i | ∂L/∂A_fc ⊙ A_fc |        (Eq. 7; one score per unit, the mean over the batch)
    m = 1[ R ≥ median(R) ]                 (Eq. 8; keep the higher-contribution half of the units)
    logits = forward_head(A_fc ⊙ m)        (training only; recomputed every step; no mask in eval mode)

[inferred] L is the cross-entropy of every row of the batch (Eq. 7 does not say which loss or rows; the
classification loss of the batch being trained on is the natural reading); its gradient with respect to
A_fc costs one extra forward/backward through the head only (the features are not recomputed).

Ties and even D: Eq. 8's median is ambiguous for an even number of units (torch.median returns the
lower middle value, which would keep D/2 + 1 units). We keep exactly ⌈D/2⌉ units, the highest R first,
ties broken by the lower unit index. For distinct scores this is exactly Eq. 8 with the median taken as
the middle value (odd D) or the mean of the two middle values (even D).

Used by `aalp` / `aalp_gd` and, through their `guided_dropout` option, by `standard` and `pgd_at`
(the paper's Table 3 rows "Raw+gd" and "ADV+gd").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import ContractModel


def feature_gradient(model: ContractModel, features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂ Σ_i CE(head(A_i), y_i) / ∂A for features A (N×D): row i is the gradient of sample i's own CE.

    Only the head is differentiated, no parameter gradient is accumulated, and `features` keeps its graph.
    """
    a = features.detach().requires_grad_(True)
    with torch.enable_grad():
        ce = F.cross_entropy(model.forward_head(a), y, reduction="sum")
        (grad,) = torch.autograd.grad(ce, a)
    return grad


def contribution_scores(features: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Eq. 7: R_d = mean_i |grad_id · A_id|, shape (D,), from features and their gradients (N×D)."""
    return (grad * features.detach()).abs().mean(0)


def guided_dropout_mask(scores: torch.Tensor) -> torch.Tensor:
    """Eq. 8: a 0/1 float mask (D,) keeping the ⌈D/2⌉ highest scores (ties: lower index kept)."""
    d = scores.shape[0]
    order = torch.argsort(scores, descending=True, stable=True)
    mask = torch.zeros_like(scores)
    mask[order[: (d + 1) // 2]] = 1.0
    return mask


def guided_dropout_logits(
    model: ContractModel,
    features: torch.Tensor,
    y: torch.Tensor,
    *,
    score_rows: int | None = None,
    rescale: bool = False,
) -> torch.Tensor:
    """Logits (N×K) of features A (N×D) with Guided Dropout when `model.training`, plain head(A) otherwise.

    `score_rows`: R (Eq. 7) is averaged over the first `score_rows` rows only (e.g. the clean half of a
    clean+adversarial batch); all rows by default. The mask is shared by every row. `rescale`
    multiplies the kept units by D/⌈D/2⌉ (≈ 2, inverted-dropout style); [inferred] off by default: the paper
    states no rescaling, and the mask keeps exactly half the units every step.
    """
    if not model.training:
        return model.forward_head(features)
    rows = slice(0, score_rows)
    scores = contribution_scores(features[rows], feature_gradient(model, features[rows], y[rows]))
    mask = guided_dropout_mask(scores)
    if rescale:
        mask = mask * (mask.numel() / mask.sum())
    return model.forward_head(features * mask)


def guided_dropout_forward(model: ContractModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """model(x) with Guided Dropout on its features (training mode), the plain model(x) in eval mode."""
    return guided_dropout_logits(model, model.forward_features(x), y)
