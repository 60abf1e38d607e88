"""Standard (natural) training: min_θ E[ CE(f(x), y) ]."""

from __future__ import annotations

import torch.nn.functional as F

from .base import Method, accuracy
from .registry import METHODS


@METHODS.register("standard")
class Standard(Method):
    name = "standard"
    needs_threat = False

    def __init__(self, threat=None, label_smoothing: float = 0.0):
        super().__init__(threat)
        self.label_smoothing = label_smoothing

    def loss(self, model, x, y, ctx):
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, {"loss": loss.detach(), "acc": accuracy(logits.detach(), y)}
