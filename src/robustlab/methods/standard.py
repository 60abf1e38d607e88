"""Standard (natural) training: min_θ E[ CE(f(x), y) ].

`guided_dropout: true` adds AALP's Guided Dropout on the features (AALP Table 3 "Raw+gd"; see guided_dropout.py).
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, accuracy
from .guided_dropout import guided_dropout_forward
from .registry import METHODS


@METHODS.register("standard")
class Standard(Method):
    name = "standard"
    needs_threat = False

    def __init__(self, threat=None, label_smoothing: float = 0.0, guided_dropout: bool = False):
        super().__init__(threat)
        self.label_smoothing = label_smoothing
        self.guided_dropout = guided_dropout

    def loss(self, model, x, y, ctx):
        logits = guided_dropout_forward(model, x, y) if self.guided_dropout else model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, {"loss": loss.detach(), "acc": accuracy(logits.detach(), y)}
