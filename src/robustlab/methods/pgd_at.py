"""PGD adversarial training (Madry et al., ICLR 2018, Eq. 2.1):

    min_θ E_(x,y) [ max_{δ ∈ B(ε)} CE(f_θ(x + δ), y) ]

The inner max is PGD-k with the CE loss from a uniform random start in the ball. `guided_dropout: true`
adds AALP's Guided Dropout on the features of x_adv (AALP Table 3 "ADV+gd"; see guided_dropout.py).
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, TrainAttack, accuracy, train_attack_options
from .guided_dropout import guided_dropout_forward
from .registry import METHODS


@METHODS.register("pgd_at")
class PGDAT(Method):
    name = "pgd_at"

    @train_attack_options(fixed=("sigma",))
    def __init__(self, threat, *, attack: TrainAttack, guided_dropout: bool = False):
        super().__init__(threat)
        self.guided_dropout = guided_dropout
        self.train_attack = attack.pgd(self.attack_threat, loss="ce")

    def loss(self, model, x, y, ctx):
        x_adv = self.adversarial(model, x, y, ctx)
        logits_adv = guided_dropout_forward(model, x_adv, y) if self.guided_dropout else model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        return loss, {"loss": loss.detach(), "adv_acc": accuracy(logits_adv.detach(), y)}
