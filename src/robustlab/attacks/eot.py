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
    values, grads = [], []
    for _ in range(eot_iter):
        logits = model(x)
        v = objective(logits)
        (g,) = torch.autograd.grad(v.sum(), x)
        values.append(v.detach())
        grads.append(g)
    if eot_iter == 1:  # the common case: no copies
        return values[0], grads[0], logits.detach()
    return torch.stack(values).mean(0), torch.stack(grads).mean(0), logits.detach()
