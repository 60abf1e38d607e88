"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, with soft targets.

Batch mode, as timm's `Mixup` (the DAT recipe uses it): one λ ~ Beta(α, α) per batch; each image is
mixed with the batch in reverse order. With both α > 0, CutMix is chosen with probability
`switch_prob`; the whole batch is mixed with probability `prob`. CutMix pastes a box of area ≈ 1 − λ
and λ is corrected to the exact pasted area. Targets: λ·smooth(y) + (1 − λ)·smooth(y_reversed), where
smooth puts 1 − s + s/K on the label and s/K elsewhere (label smoothing s).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets N×K with label smoothing."""
    off = smoothing / num_classes
    return F.one_hot(y, num_classes).float() * (1.0 - smoothing) + off


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed images N×C×H×W, soft targets N×K); randomness from `generator` only."""
    u = torch.rand(2, generator=generator, device=generator.device).tolist()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    target = soft_targets(y, num_classes, smoothing)
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or u[0] >= prob:
        return x, target
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or u[1] < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    flipped = x.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        rng = np.random.default_rng(seed + 1)
        cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * flipped
    return x, lam * target + (1 - lam) * target.flip(0)
