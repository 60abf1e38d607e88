"""Adversarial logit pairing (Kannan, Kurakin & Goodfellow, "Adversarial Logit Pairing", arXiv 1803.06373;
Wu et al., AALP, arXiv 2005.11904, Eq. 1):

    L = w · CE(f(x), y) + (1 − w) · CE(f(x_adv), y) + λ · mean_i ‖ f(x_i) − f(x_adv,i) ‖²₂

with f the logits, the clean and adversarial halves in one mixed minibatch (w = 0.5 as in Kannan et
al.) and x_adv from PGD-k on the CE loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, TrainAttack, accuracy, train_attack_options
from .registry import METHODS


def logit_pairing(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """‖f(x) − f(x_adv)‖²₂ per sample (Eq. 1), shape (N,)."""
    return (logits_clean - logits_adv).pow(2).sum(1)


def mixed_cross_entropy(
    logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, clean_weight: float
) -> torch.Tensor:
    """w · CE(f(x), y) + (1 − w) · CE(f(x_adv), y): the classification part of the mixed minibatch."""
    return clean_weight * F.cross_entropy(logits_clean, y) + (1 - clean_weight) * F.cross_entropy(logits_adv, y)


@METHODS.register("alp")
class ALP(Method):
    name = "alp"

    @train_attack_options(fixed=("sigma",))
    def __init__(self, threat, lam: float = 0.5, clean_weight: float = 0.5, *, attack: TrainAttack):
        super().__init__(threat)
        self.lam, self.clean_weight = lam, clean_weight
        self.train_attack = attack.pgd(self.attack_threat, loss="ce")

    def loss(self, model, x, y, ctx):
        x_adv = self.adversarial(model, x, y, ctx)
        logits_clean, logits_adv = model(torch.cat([x, x_adv])).chunk(2)
        classification = mixed_cross_entropy(logits_clean, logits_adv, y, self.clean_weight)
        pairing = logit_pairing(logits_clean, logits_adv).mean()
        loss = classification + self.lam * pairing
        return loss, {
            "loss": loss.detach(),
            "alp": pairing.detach(),
            "acc": accuracy(logits_clean.detach(), y),
            "adv_acc": accuracy(logits_adv.detach(), y),
        }
