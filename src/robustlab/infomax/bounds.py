"""Variational lower bounds on mutual information, computed from a critic's score tensor.

Convention (as in Deep InfoMax and the Zhu et al. code): `u[i, j, l] = T(x_j, z_i)_l`, the critic's
score for representation z_i paired with input x_j at location l. Shape N×N×L; L = 1 for a global
critic. The diagonal i = j holds the N positive pairs, drawn from the joint p(x, z); the N(N−1)
off-diagonal entries are the negatives, drawn from the product of marginals p(x)p(z). Each bound
is computed per location and then averaged over locations.

- Donsker–Varadhan (MINE, Belghazi et al. 2018):
      I(X; Z) ≥ E_p[T] − log E_{p⊗p}[e^T]
  `variant="exact"` averages e^T over the off-diagonal entries only. `variant="code"` reproduces the
  official Zhu et al. code, whose mask multiplies the diagonal by 0 (instead of −∞): N extra terms
  e^0 = 1 join the sum, while the normaliser stays N(N−1).
- Jensen–Shannon (f-GAN form, Nowozin et al. 2016; Hjelm et al. 2019):
      E_p[log 2 − softplus(−T)] − E_{p⊗p}[softplus(T) − log 2]
  This is a bound on (twice) a Jensen–Shannon divergence, not on MI in nats. Its optimal critic is
  T* = log p(x, z)/(p(x)p(z)), so the DV bound evaluated on a JSD-trained critic is an MI estimate.
- InfoNCE (van den Oord et al. 2018):
      I(X; Z) ≥ log N + E_i[ u_ii − log Σ_j e^{u_ij} ]
  per location, negatives x_j at the same location. It can never exceed log N. (The official code
  pools the negatives of all locations into one softmax; we keep the standard per-location bound.)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Bound = Literal["dv", "jsd", "infonce"]
DVVariant = Literal["exact", "code"]
BOUNDS: tuple[str, ...] = ("dv", "jsd", "infonce")
DV_VARIANTS: tuple[str, ...] = ("exact", "code")
LOG2 = math.log(2.0)


def _check(u: torch.Tensor) -> int:
    if u.dim() != 3 or u.shape[0] != u.shape[1] or u.shape[0] < 2:
        raise ValueError(f"scores must have shape N×N×L with N >= 2; got {tuple(u.shape)}")
    return u.shape[0]


def positives(u: torch.Tensor) -> torch.Tensor:
    """The diagonal scores u[i, i, l], shape N×L."""
    return u.diagonal(dim1=0, dim2=1).T


def _off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def dv_terms(u: torch.Tensor, variant: DVVariant = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-location DV terms (E_p[T], log E_{p⊗p}[e^T]), each of shape (L,)."""
    n = _check(u)
    off = _off_diagonal(n, u.device)[:, :, None]
    if variant == "exact":
        neg = u.masked_fill(~off, float("-inf"))
    elif variant == "code":
        neg = u * off  # the official code's mask: diagonal scores become 0, i.e. e^0 = 1 each
    else:
        raise ValueError(f"DV variant {variant!r}; allowed: {', '.join(DV_VARIANTS)}")
    log_mean_exp = torch.logsumexp(neg.flatten(0, 1), dim=0) - math.log(n * (n - 1))
    return positives(u).mean(0), log_mean_exp


def dv_bound(u: torch.Tensor, variant: DVVariant = "exact") -> torch.Tensor:
    """Donsker–Varadhan lower bound (nats), averaged over locations; a scalar."""
    pos, log_neg = dv_terms(u, variant)
    return (pos - log_neg).mean()


def jsd_bound(u: torch.Tensor) -> torch.Tensor:
    """The f-GAN Jensen–Shannon objective E_p[log 2 − sp(−T)] − E_{p⊗p}[sp(T) − log 2]; a scalar."""
    n = _check(u)
    pos = (LOG2 - F.softplus(-positives(u))).mean()
    neg = (F.softplus(u[_off_diagonal(n, u.device)]) - LOG2).mean()
    return pos - neg


def infonce_bound(u: torch.Tensor) -> torch.Tensor:
    """InfoNCE lower bound (nats), ≤ log N by construction; a scalar."""
    n = _check(u)
    return (math.log(n) + positives(u) - torch.logsumexp(u, dim=1)).mean()


def bound_value(u: torch.Tensor, bound: Bound, dv_variant: DVVariant = "exact") -> torch.Tensor:
    """The value of `bound` on the scores (a scalar)."""
    if bound == "dv":
        return dv_bound(u, dv_variant)
    if bound == "jsd":
        return jsd_bound(u)
    if bound == "infonce":
        return infonce_bound(u)
    raise ValueError(f"unknown bound {bound!r}; allowed: {', '.join(BOUNDS)}")
