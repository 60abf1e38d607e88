"""Adaptive Adversarial Logits Pairing (Wu, Sang, Xu, Zheng, Xu, "Adaptive Adversarial Logits Pairing",
arXiv 2005.11904, ACM TOMM 2024), with its ablations.

    ALP(x)  = ‖ f(x) − f(x_adv) ‖²₂                                  (Eq. 1, alp.logit_pairing)
    R       = mean_i | ∂L/∂A_fc ⊙ A_fc |                              (Eq. 7, guided_dropout.py)
    m       = 1[ R ≥ median(R) ]                                      (Eq. 8, guided_dropout.py)
    AALP(x) = p_clean(y | x) · ALP(x),  p_clean = softmax(f(x))_y     (Eq. 9; detached)
    L       = ClassificationLoss + α · mean_batch AALP(x)             (Eq. 10; α = 1.0)

with f the logits head(A_fc ⊙ m) of the mixed clean + adversarial minibatch, x_adv from PGD-k on the CE
loss (no mask during the attack). Choices the paper leaves open, all options ([inferred]: what we chose and why):

- ClassificationLoss = w · CE(f(x), y) + (1 − w) · CE(f(x_adv), y), `clean_weight` w = 0.5 (Kannan's
  mixed minibatch). The paper's other reading, the plain sum CE + CE, is this with w = 0.5 and α halved
  up to an overall factor 2 of the loss (which Adam, the paper's optimizer, ignores).
- p_clean is detached (otherwise the weight would reward lowering the clean confidence) and comes from
  the masked clean forward pass of the current model.
- `gd_score`: the loss whose gradient drives R: the CE of every clean and adversarial row
  ("clean_adv", default) or of the clean rows only ("clean").
- `gd_rescale`: no 1/(1 − p) rescaling of the kept units by default (the mask is deterministic).
- Guided Dropout is a training-time module: in eval mode (and so at test time) there is no mask.

Variants (the paper's Table 2 ablations), subclasses that fix the two switches:
`aalp_gd` = ALP + Guided Dropout (p_clean ≡ 1), `aalp_sw` = ALP + sample weighting (no mask),
`aalp` = both. With both switches off the loss is exactly `alp` with λ = α.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .alp import logit_pairing, mixed_cross_entropy
from .base import Method, TrainAttack, accuracy, train_attack_options
from .guided_dropout import guided_dropout_logits
from .registry import METHODS


def ground_truth_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)_y per sample, shape (N,) (the clean confidence of Eq. 9)."""
    return F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)


GDScore = Literal["clean_adv", "clean"]


@METHODS.register("aalp")
class AALP(Method):
    name = "aalp"

    @train_attack_options(fixed=("sigma",))
    def __init__(
        self,
        threat,
        alpha: float = 1.0,
        clean_weight: float = 0.5,
        guided_dropout: bool = True,
        sample_weighting: bool = True,
        gd_score: GDScore = "clean_adv",
        gd_rescale: bool = False,
        *,
        attack: TrainAttack,
    ):
        super().__init__(threat)
        self.alpha, self.clean_weight = alpha, clean_weight
        self.guided_dropout, self.sample_weighting = guided_dropout, sample_weighting
        self.gd_score, self.gd_rescale = gd_score, gd_rescale
        self.train_attack = attack.pgd(self.attack_threat, loss="ce")

    def loss(self, model, x, y, ctx):
        """x (N×C×H×W) and its PGD examples form one 2N batch; features A_fc are 2N×D, logits 2N×K."""
        x_adv = self.adversarial(model, x, y, ctx)
        features = model.forward_features(torch.cat([x, x_adv]))
        if self.guided_dropout:  # Eqs. 7–8
            score_rows = x.shape[0] if self.gd_score == "clean" else None
            logits = guided_dropout_logits(
                model, features, torch.cat([y, y]), score_rows=score_rows, rescale=self.gd_rescale
            )
        else:
            logits = model.forward_head(features)
        logits_clean, logits_adv = logits.chunk(2)
        classification = mixed_cross_entropy(logits_clean, logits_adv, y, self.clean_weight)
        pairing = logit_pairing(logits_clean, logits_adv)  # Eq. 1, per sample
        weight = (
            ground_truth_probability(logits_clean.detach(), y) if self.sample_weighting else torch.ones_like(pairing)
        )
        adaptive = (weight * pairing).mean()  # Eq. 9, averaged over the batch
        loss = classification + self.alpha * adaptive  # Eq. 10
        return loss, {
            "loss": loss.detach(),
            "ce": classification.detach(),
            "alp": pairing.detach().mean(),
            "aalp": adaptive.detach(),
            "weight": weight.mean(),
            "acc": accuracy(logits_clean.detach(), y),
            "adv_acc": accuracy(logits_adv.detach(), y),
        }


@METHODS.register("aalp_gd")
class AALPGuidedDropout(AALP):
    """AALP_gd: ALP + Guided Dropout only (p_clean ≡ 1)."""

    name = "aalp_gd"

    @train_attack_options(fixed=("sigma",))
    def __init__(
        self,
        threat,
        alpha: float = 1.0,
        clean_weight: float = 0.5,
        gd_score: GDScore = "clean_adv",
        gd_rescale: bool = False,
        *,
        attack: TrainAttack,
    ):
        super().__init__(
            threat,
            alpha,
            clean_weight,
            guided_dropout=True,
            sample_weighting=False,
            gd_score=gd_score,
            gd_rescale=gd_rescale,
            attack=attack,
        )


@METHODS.register("aalp_sw")
class AALPSampleWeighting(AALP):
    """AALP_sw: ALP + adaptive sample weighting only (no mask)."""

    name = "aalp_sw"

    @train_attack_options(fixed=("sigma",))
    def __init__(self, threat, alpha: float = 1.0, clean_weight: float = 0.5, *, attack: TrainAttack):
        super().__init__(threat, alpha, clean_weight, guided_dropout=False, sample_weighting=True, attack=attack)
