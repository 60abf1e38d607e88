"""Expectation over transformation (EOT; Athalye et al., "Obfuscated gradients give a false sense of security",
ICML 2018, arXiv 1802.00420): against a randomised model, step along the gradient averaged over several
forward-backward passes, as AutoAttack's `rand` version does with 20 (Croce & Hein, ICML 2020, arXiv 2003.01690;
the reference code fra31/auto-attack averages APGD's gradient over `eot_iter` passes)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..registry import check_range


def expected_grad(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    eot_iter: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(objective (N,), its input gradient, logits) at x, the objective and gradient averaged over `eot_iter`
    passes; the logits are the last pass's (a randomised model's prediction is itself one draw). All detached."""
    check_range("eot_iter", eot_iter, 1)
    x = x.detach().requires_grad_(True)
    value = grad = torch.zeros(())
    for _ in range(eot_iter):
        logits = model(x)
        v = objective(logits)
        (g,) = torch.autograd.grad(v.sum(), x)
        value, grad = value + v.detach(), grad + g
    return value / eot_iter, grad / eot_iter, logits.detach()
