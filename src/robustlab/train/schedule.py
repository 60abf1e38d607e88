"""The optimizer and the learning-rate schedule of a training config."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay
        )
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The multiplier of the base learning rate at global `step` (a pure function: resume needs no state)."""
    s = cfg.schedule
    total = cfg.epochs * steps_per_epoch
    epoch = step / steps_per_epoch
    if s.name == "onecycle":
        peak = s.pct_start * total
        if step < peak:
            return 1 / 25 + (1 - 1 / 25) * step / peak
        t = (step - peak) / max(1.0, total - peak)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    warm = 1.0 if s.warmup_epochs <= 0 else min(1.0, (epoch + 1 / steps_per_epoch) / s.warmup_epochs)
    if s.name == "constant":
        return warm
    if s.name == "piecewise":
        return warm * s.gamma ** sum(epoch >= m for m in s.milestones)
    return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
