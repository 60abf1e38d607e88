"""PGD adversarial training (Madry et al., ICLR 2018, Eq. 2.1):

    min_θ E_(x,y) [ max_{δ ∈ B(ε)} CE(f_θ(x + δ), y) ]

The inner max is PGD-k with the CE loss from a uniform random start in the ball. `guided_dropout: true`
adds AALP's Guided Dropout on the features of x_adv (AALP Table 3 "ADV+gd"; see guided_dropout.py).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from .base import Method, accuracy, pgd_for_training
from .guided_dropout import guided_dropout_forward
from .registry import METHODS


@METHODS.register("pgd_at")
class PGDAT(Method):
    name = "pgd_at"

    def __init__(
        self,
        threat,
        attack_steps: int = 10,
        attack_step: float | None = None,
        attack_start: Literal["uniform", "normal", "none"] = "uniform",
        attack_mode: Literal["eval", "train"] = "eval",
        guided_dropout: bool = False,
    ):
        super().__init__(threat)
        self.guided_dropout = guided_dropout
        self.train_attack = pgd_for_training(self.threat, loss="ce", steps=attack_steps, step=attack_step, start=attack_start, mode=attack_mode)

    def loss(self, model, x, y, ctx):
        x_adv = self.adversarial(model, x, y, ctx)
        logits_adv = guided_dropout_forward(model, x_adv, y) if self.guided_dropout else model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        return loss, {"loss": loss.detach(), "adv_acc": accuracy(logits_adv.detach(), y)}
