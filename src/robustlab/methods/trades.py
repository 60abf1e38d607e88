"""TRADES (Zhang et al., ICML 2019, Eq. 5):

    min_θ E [ CE(f(x), y) + β · max_{x' ∈ B(x, ε)} KL( f(x) ‖ f(x') ) ]

The inner max is PGD-k on the KL loss from x + 0.001·N(0, I) (the official code's start). The KL is
averaged over the batch and, as in the official code, gradients flow through both f(x) and f(x').
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, TrainAttack, accuracy, train_attack_options
from .registry import METHODS


def trades_kl(logits_clean, logits_adv):
    """KL(softmax(clean) ‖ softmax(adv)), mean over the batch."""
    return F.kl_div(
        F.log_softmax(logits_adv, 1), F.log_softmax(logits_clean, 1), reduction="batchmean", log_target=True
    )


@METHODS.register("trades")
class TRADES(Method):
    name = "trades"

    @train_attack_options(TrainAttack(start="normal"))
    def __init__(self, threat, beta: float = 6.0, *, attack: TrainAttack):
        super().__init__(threat)
        self.beta = beta
        self.train_attack = attack.pgd(self.attack_threat, loss="kl")

    def loss(self, model, x, y, ctx):
        x_adv = self.adversarial(model, x, y, ctx)
        logits = model(x)
        logits_adv = model(x_adv)
        natural = F.cross_entropy(logits, y)
        robust = trades_kl(logits, logits_adv)
        loss = natural + self.beta * robust
        return loss, {
            "loss": loss.detach(),
            "ce": natural.detach(),
            "kl": robust.detach(),
            "acc": accuracy(logits.detach(), y),
            "adv_acc": accuracy(logits_adv.detach(), y),
        }
