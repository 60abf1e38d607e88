"""FGSM adversarial training, the "FGSM-trained (*)" model of SCARL's Fig. 1:

    min_θ E_(x,y) [ CE(f_θ(x_adv), y) ],   x_adv = Π_{B(x, ε) ∩ [0,1]} ( x_0 + α · sign ∇_x CE(f_θ(x_0), y) )

`start: none` (default): plain FGSM (Goodfellow et al. 2015), x_0 = x and α = ε; the classic single-step
training that the paper calls less robust than PGD-AT. `start: uniform`: "fast" FGSM of Wong et al. (2020),
x_0 uniform in the ball and α = 1.25 ε. `attack_step` overrides α. The loss is on adversarial inputs
only (as Wong et al. and our pgd_at; Goodfellow et al. mixed in the clean loss).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from .base import Method, TrainAttack, accuracy
from .registry import METHODS


@METHODS.register("fgsm_at")
class FGSMAT(Method):
    name = "fgsm_at"

    def __init__(
        self,
        threat,
        start: Literal["none", "uniform"] = "none",
        attack_step: float | None = None,
        attack_mode: Literal["eval", "train"] = "eval",
    ):
        super().__init__(threat)
        step = (
            attack_step if attack_step is not None else (1.25 if start == "uniform" else 1.0) * self.attack_threat.eps
        )
        self.train_attack = TrainAttack(steps=1, step=step, start=start, mode=attack_mode).pgd(
            self.attack_threat, loss="ce"
        )

    def loss(self, model, x, y, ctx):
        x_adv = self.adversarial(model, x, y, ctx)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        return loss, {"loss": loss.detach(), "adv_acc": accuracy(logits_adv.detach(), y)}
