"""Adaptive Adversarial Logits Pairing (Wu, Sang, Xu, Zheng, Xu; arXiv 2005.11904), with its ablations.

    ALP(x)  = ‖ f(x) − f(x_adv) ‖²₂                                  (Eq. 1, alp.logit_pairing)
    R       = mean_i | ∂L/∂A_fc ⊙ A_fc |                              (Eq. 7, guided_dropout.py)
    m       = 1[ R ≥ median(R) ]                                      (Eq. 8, guided_dropout.py)
    AALP(x) = p_clean(y | x) · ALP(x),  p_clean = softmax(f(x))_y     (Eq. 9; detached)
    L       = ClassificationLoss + α · mean_batch AALP(x)             (Eq. 10; α = 1.0)

with f the logits head(A_fc ⊙ m) of the mixed clean + adversarial minibatch, x_adv from PGD-k on the CE
loss (no mask during the attack). Choices the paper leaves open [INF, algorithms.md §2.2], all options:

- ClassificationLoss = w · CE(f(x), y) + (1 − w) · CE(f(x_adv), y), `clean_weight` w = 0.5 (Kannan's
  mixed minibatch). The paper's other reading, the plain sum CE + CE, is this with w = 0.5 and α halved
  up to an overall factor 2 of the loss (which Adam, the paper's optimizer, ignores).
- p_clean is detached (otherwise the weight would reward lowering the clean confidence) and comes from
  the masked clean forward pass of the current model.
- `gd_score`: the loss whose gradient drives R: the CE of every clean and adversarial row
  ("clean_adv", default) or of the clean rows only ("clean").
- `gd_rescale`: no 1/(1 − p) rescaling of the kept units by default (the mask is deterministic).
- Guided Dropout is a training-time module: in eval mode (and so at test time) there is no mask.

Variants (the paper's Table 2 ablations), the same class with the two switches fixed:
`aalp_gd` = ALP + Guided Dropout (p_clean ≡ 1), `aalp_sw` = ALP + sample weighting (no mask),
`aalp` = both. With both switches off the loss is exactly `alp` with λ = α.
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
import torch.nn.functional as F

from .alp import logit_pairing, mixed_cross_entropy
from .base import Method, accuracy, pgd_for_training
from .guided_dropout import guided_dropout_logits
from .registry import METHODS


def ground_truth_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)_y per sample, shape (N,) (the clean confidence of Eq. 9)."""
    return F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)


@METHODS.register("aalp")
class AALP(Method):
    name = "aalp"

    def __init__(
        self,
        threat,
        alpha: float = 1.0,
        clean_weight: float = 0.5,
        guided_dropout: bool = True,
        sample_weighting: bool = True,
        gd_score: Literal["clean_adv", "clean"] = "clean_adv",
        gd_rescale: bool = False,
        attack_steps: int = 10,
        attack_step: float | None = None,
        attack_start: Literal["uniform", "normal", "none"] = "uniform",
        attack_mode: Literal["eval", "train"] = "eval",
    ):
        super().__init__(threat)
        self.alpha, self.clean_weight = alpha, clean_weight
        self.guided_dropout, self.sample_weighting = guided_dropout, sample_weighting
        self.gd_score, self.gd_rescale = gd_score, gd_rescale
        self.train_attack = pgd_for_training(self.threat, loss="ce", steps=attack_steps, step=attack_step, start=attack_start, mode=attack_mode)

    def loss(self, model, x, y, ctx):
        """x (N×C×H×W) and its PGD examples form one 2N batch; features A_fc are 2N×D, logits 2N×K."""
        x_adv = self.adversarial(model, x, y, ctx)
        features = model.forward_features(torch.cat([x, x_adv]))
        if self.guided_dropout:  # Eqs. 7–8
            score_rows = x.shape[0] if self.gd_score == "clean" else None
            logits = guided_dropout_logits(model, features, torch.cat([y, y]), score_rows=score_rows, rescale=self.gd_rescale)
        else:
            logits = model.forward_head(features)
        logits_clean, logits_adv = logits.chunk(2)
        classification = mixed_cross_entropy(logits_clean, logits_adv, y, self.clean_weight)
        pairing = logit_pairing(logits_clean, logits_adv)  # Eq. 1, per sample
        weight = ground_truth_probability(logits_clean.detach(), y) if self.sample_weighting else torch.ones_like(pairing)
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


def _variant(name: str, guided_dropout: bool, sample_weighting: bool, doc: str) -> type[AALP]:
    """AALP with the two switches fixed; its options are AALP's without the switches (and without the
    Guided Dropout options when Guided Dropout is off)."""

    def __init__(self, threat, **options):
        AALP.__init__(self, threat, guided_dropout=guided_dropout, sample_weighting=sample_weighting, **options)

    fixed = {"guided_dropout", "sample_weighting"} | (set() if guided_dropout else {"gd_score", "gd_rescale"})
    full = inspect.signature(AALP.__init__, eval_str=True)
    __init__.__signature__ = full.replace(parameters=[p for p in full.parameters.values() if p.name not in fixed])  # type: ignore[attr-defined]
    cls = type(f"AALP_{name.split('_')[1].upper()}", (AALP,), {"__init__": __init__, "__doc__": doc, "name": name})
    return METHODS.register(name)(cls)


AALPGuidedDropout = _variant("aalp_gd", True, False, "AALP_gd: ALP + Guided Dropout only (p_clean ≡ 1).")
AALPSampleWeighting = _variant("aalp_sw", False, True, "AALP_sw: ALP + adaptive sample weighting only (no mask).")
