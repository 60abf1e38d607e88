"""DAT's discrete adversarial example (Mao et al., NeurIPS 2022; official code: easyrobust dat/main.py).

With a discretiser Q (a frozen VQ autoencoder, images in [0, 1] -> [0, 1]):

    x̂   = Q(x)                                         no gradient through Q
    b    = x̂  (perturb_base="Qx", the official code)  or  x  (perturb_base="x", the paper's Q(x + δ))
    x⁰   = b + ε·r/‖r‖₂, r ~ N(0, I), clipped to [0, 1]   with probability p (one coin per batch), else b
    g    = ∇ CE(f(·), y) at  xᵗ (base Qx)  or at Q(xᵗ) (base x; straight-through: ∂Q/∂x read as I)
    xᵗ⁺¹ = Proj_{‖·−b‖₂ ≤ ε}( xᵗ + α·g/‖g‖₂ ), clipped to [0, 1]      k times (official: k = 1)
    x_adv = Q(x^k)

The ℓ2 norms are per sample over all C·H·W pixels. The model runs in `mode` during the attack (the
official code keeps it in TRAIN mode; BatchNorm statistics are restored afterwards). The labels may
be soft targets (N×K, e.g. mixup/cutmix), as in the official code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from ..data.base import check_images
from ..errors import RobustlabError
from ..registry import check_range
from ..threat import ThreatModel, per_sample
from .base import Attack, AttackMode, check_logits
from .pgd import ascent_step

Discretiser = Callable[[torch.Tensor], torch.Tensor]
PerturbBase = Literal["Qx", "x"]


def straight_through(q: Discretiser, x: torch.Tensor) -> torch.Tensor:
    """Q(x) in the forward pass, identity in the backward pass: ∂L(Q(x))/∂x := ∂L/∂z at z = Q(x)."""
    with torch.no_grad():
        qx = q(x)
    return x + (qx - x).detach()


def sphere_start(base: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """base + eps·r/‖r‖₂ with Gaussian r (a point on the ℓ2 sphere, per sample), clipped to [0, 1]."""
    r = torch.randn(base.shape, generator=generator, device=base.device, dtype=base.dtype)
    r = r / per_sample(r.flatten(1).norm(dim=1).clamp_min(1e-12), r)
    return (base + eps * r).clamp(0.0, 1.0)


class DiscreteAdversarial(Attack):
    """`steps` normalised-gradient ℓ2 steps of size `step` inside the ε-ball around the base, then Q."""

    name = "discrete"

    def __init__(
        self,
        threat: ThreatModel,
        quantize: Discretiser,
        steps: int = 1,
        step: float = 0.1,
        start_prob: float = 0.8,
        perturb_base: PerturbBase = "Qx",
        *,
        seed: int = 0,
        mode: AttackMode = "train",
        num_classes: int | None = None,
    ):
        super().__init__(threat, seed=seed, mode=mode, num_classes=num_classes)
        if self.threat.norm != "l2":
            raise RobustlabError(f"{self.name}: DAT perturbs in l2; got threat model {self.threat}.")
        check_range(f"{self.name} steps", steps, 1)
        check_range(f"{self.name} step", step, 0.0, lo_open=True)
        check_range(f"{self.name} start_prob", start_prob, 0.0, 1.0)
        if perturb_base not in ("Qx", "x"):
            raise RobustlabError(
                f"{self.name}: perturb_base={perturb_base!r}; allowed: Qx (official code), x (paper form Q(x+δ))."
            )
        self.quantize, self.steps, self.step, self.start_prob, self.perturb_base = (
            quantize,
            steps,
            float(step),
            start_prob,
            perturb_base,
        )

    def __repr__(self) -> str:
        return (
            f"DiscreteAdversarial({self.threat}, steps={self.steps}, step={self.step:g}, "
            f"start_prob={self.start_prob:g}, "
            f"perturb_base={self.perturb_base}, mode={self.mode})"
        )

    def _check(self, model, x, y):
        if y.dim() == 2 and y.is_floating_point():  # soft targets N×K
            check_images(self.name, x)
            if y.shape[0] != x.shape[0]:
                raise RobustlabError(f"{self.name}: {y.shape[0]} soft targets for {x.shape[0]} images.")
            return y.shape[1]
        return super()._check(model, x, y)

    def perturb(
        self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(base b, x^k): the continuous point before the final re-discretisation; ‖x^k − b‖₂ ≤ ε, in [0, 1].
        Call inside `model_untouched` (as `run`/`__call__` do)."""
        with torch.no_grad():
            base = self.quantize(x) if self.perturb_base == "Qx" else x
        coin = torch.rand((), generator=generator, device=generator.device)
        x_adv = sphere_start(base, self.threat.eps, generator) if float(coin) < self.start_prob else base.clone()
        for t in range(self.steps):
            x_adv.requires_grad_(True)
            point = x_adv if self.perturb_base == "Qx" else straight_through(self.quantize, x_adv)
            logits = model(point)
            if t == 0:
                check_logits(self.name, logits, x.shape[0], y.shape[1] if y.dim() == 2 else self.num_classes)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_adv)
            x_adv = ascent_step(x_adv.detach(), grad, base, self.threat, self.step)
        return base, x_adv.detach()

    def _run(self, model, x, y, generator, num_classes, need_success):
        _, x_k = self.perturb(model, x, y, generator)
        with torch.no_grad():
            x_adv = self.quantize(x_k)
            success = model(x_adv).argmax(1) != (y.argmax(1) if y.dim() == 2 else y) if need_success else None
        return x_adv, success
