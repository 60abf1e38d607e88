"""The inner minimisation of worst-case MI (Zhu et al.): PGD on a whole batch that minimises the MI estimate.

    I_ε(g) = inf_{μ' ∈ B(μ, ε)} I(X'; g(X'))

For the empirical distribution of a batch, the Wasserstein-∞ ball B(μ, ε) is exactly "move every
sample by at most ε", so the batch's perturbations are optimised jointly against one batch-level
scalar, the critic's bound Î(x', g(x')). This is why it is a function here and not an `Attack`:
the attack contract is per sample, with labels, against a classifier, while this objective couples
the samples of a batch through the negatives and needs the critic and no labels.

As in the official code (robustness-lib PGD with `use_best`): no random start by default, the
critic and the encoder in eval mode, the step is a steepest-descent step of the norm followed by
projection onto the ball and [0, 1], and the iterate with the lowest estimate is kept, the
starting point included, so the result is never above the estimate at the clean batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..attacks.base import model_untouched
from ..attacks.pgd import ascent_step, random_start
from ..threat import ThreatModel
from .estimator import MIEstimator


def minimise_mi(
    encode: Callable[[torch.Tensor], torch.Tensor],
    estimator: MIEstimator,
    x: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step: float,
    start: str = "none",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """PGD-`steps` minimising `estimator(x', encode(x')).objective` over the batch; returns (x_adv, its objective).

    x: N×C×H×W in [0, 1]. `encode` maps a batch to N×D representations and must be differentiable;
    the caller freezes the encoder (e.g. `model_untouched(model)`); the estimator is frozen and put in
    eval mode here, and restored afterwards. Cost: `steps` forward+backward passes plus one forward.
    """
    with model_untouched(estimator, "eval"):
        x_adv = random_start(x, threat, start, 0.001, generator) if start != "none" else x.detach()
        best_x, best = x_adv, float("inf")
        for t in range(steps + 1):
            last = t == steps
            x_adv = x_adv.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                value = estimator(x_adv, encode(x_adv)).objective
            if value.item() < best:
                best_x, best = x_adv.detach(), value.item()
            if not last:
                (grad,) = torch.autograd.grad(value, x_adv)
                x_adv = ascent_step(x_adv.detach(), -grad, x, threat, step)
    return best_x, best
