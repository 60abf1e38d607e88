"""Noise corruptions: Gaussian, shot (Poisson) and impulse (salt-and-pepper)."""

from __future__ import annotations

import torch

from .registry import corruption


@corruption("gaussian_noise", "noise", cifar=[0.04, 0.06, 0.08, 0.09, 0.10], imagenet=[0.08, 0.12, 0.18, 0.26, 0.38])
def gaussian_noise(x, c, s, g, root):
    """x + N(0, c²) per pixel."""
    return x + c * torch.randn(x.shape, generator=g, device=g.device).to(x)


@corruption("shot_noise", "noise", cifar=[500, 250, 100, 75, 50], imagenet=[60, 25, 12, 5, 3])
def shot_noise(x, c, s, g, root):
    """Poisson(c·x) / c: photon counting with c photons at full intensity."""
    return torch.poisson(x.to(g.device) * c, generator=g).to(x) / c


@corruption("impulse_noise", "noise", cifar=[0.01, 0.02, 0.03, 0.05, 0.07], imagenet=[0.03, 0.06, 0.09, 0.17, 0.27])
def impulse_noise(x, c, s, g, root):
    """Each value (per channel) becomes 0 or 1 with probability c, salt and pepper equally likely."""
    hit = torch.rand(x.shape, generator=g, device=g.device).to(x.device) < c
    salt = torch.rand(x.shape, generator=g, device=g.device).to(x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)
