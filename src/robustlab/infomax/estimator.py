"""An MI estimator = a critic + the lower bound it is trained with (+ MINE's moving average).

`MIEstimator(critic, bound, dv_variant, ma_rate)(x, z)` returns an `MIEstimate`:
- `objective`: the value of the training bound (the critic maximises it, the worst-case attack
  minimises it);
- `mi`: the MI estimate in nats: the DV bound for `dv` and for `jsd` (a JSD-trained critic
  approximates log p(x,z)/(p(x)p(z)), on which DV is tight), the InfoNCE bound for `infonce`;
- `loss`: what to minimise in a training step: −objective, or with `ma_rate` (DV only) MINE's
  bias-corrected surrogate, whose gradient replaces the batch estimate of E_{p⊗p}[e^T] in the
  denominator of ∇ log E[e^T] by a moving average across batches (Belghazi et al. 2018, §3.2):
      ma ← (1 − ma_rate)·ma + ma_rate·E_batch[e^T];  loss = −(E_p[T] − E_batch[e^T] / ma)
  kept per location and in log space. The moving average is updated in training mode only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import RobustlabError
from .bounds import BOUNDS, DV_VARIANTS, Bound, DVVariant, dv_bound, dv_terms, infonce_bound, jsd_bound


def check_options(bound: str, dv_variant: str, ma_rate: float | None) -> None:
    """Raise a RobustlabError naming the bad value unless the estimator options are valid."""
    if bound not in BOUNDS:
        raise RobustlabError(f"MI bound {bound!r}; allowed: {', '.join(BOUNDS)}.")
    if dv_variant not in DV_VARIANTS:
        raise RobustlabError(f"dv_variant={dv_variant!r}; allowed: {', '.join(DV_VARIANTS)}.")
    if ma_rate is not None and (bound != "dv" or not 0.0 < ma_rate <= 1.0):
        raise RobustlabError(
            f"ma_rate={ma_rate!r}: the moving-average correction applies to the dv bound only, with 0 < ma_rate <= 1."
        )


@dataclass
class MIEstimate:
    """Scalars: `loss` (to minimise), `objective` (training bound), `mi` (nats, detached unless DV/InfoNCE)."""

    loss: torch.Tensor
    objective: torch.Tensor
    mi: torch.Tensor


class MIEstimator(nn.Module):
    """A critic (returning N×N×L scores) and the bound it is trained with."""

    def __init__(self, critic: Any, bound: Bound = "dv", dv_variant: DVVariant = "exact", ma_rate: float | None = None):
        super().__init__()
        check_options(bound, dv_variant, ma_rate)
        self.critic = critic
        self.bound, self.dv_variant, self.ma_rate = bound, dv_variant, ma_rate
        self.log_ma: torch.Tensor
        self.register_buffer("log_ma", torch.full((critic.num_locations,), float("nan")))

    def extra_repr(self) -> str:
        ma = f", ma_rate={self.ma_rate}" if self.ma_rate is not None else ""
        return f"bound={self.bound}, dv_variant={self.dv_variant}{ma}"

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> MIEstimate:
        """x: N×... inputs, z: N×D representations (row i of each is a positive pair)."""
        u = self.critic(x, z)
        if self.bound == "dv":
            pos, log_neg = dv_terms(u, self.dv_variant)
            objective = (pos - log_neg).mean()
            loss = -objective
            if self.ma_rate is not None and self.training:
                loss = -(pos - torch.exp(log_neg - self._update_moving_average(log_neg.detach()))).mean()
            return MIEstimate(loss, objective, objective)
        objective = jsd_bound(u) if self.bound == "jsd" else infonce_bound(u)
        mi = dv_bound(u.detach(), self.dv_variant) if self.bound == "jsd" else objective
        return MIEstimate(-objective, objective, mi)

    @torch.no_grad()
    def _update_moving_average(self, log_neg: torch.Tensor) -> torch.Tensor:
        if torch.isnan(self.log_ma).any():
            self.log_ma.copy_(log_neg)
        else:
            a = self.ma_rate
            assert a is not None, "the moving average is updated only with ma_rate set"
            self.log_ma.copy_(
                torch.logaddexp(self.log_ma + math.log1p(-a), log_neg + math.log(a)) if a < 1 else log_neg
            )
        return self.log_ma.clone()
