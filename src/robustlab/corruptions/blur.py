"""Blur corruptions: defocus, glass, motion and zoom."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import ops
from .registry import corruption


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """A normalised disk {X² + Y² ≤ r²}, softened by a 3-tap (5-tap when r > 8) Gaussian of σ = alias_blur,
    cropped to its support."""
    taps = 3 if radius <= 8 else 5
    reach = math.floor(radius) + taps // 2
    t = torch.arange(-reach, reach + 1, dtype=torch.float32)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).float()
    disk = disk / disk.sum()
    i = torch.arange(taps, dtype=torch.float32) - (taps - 1) / 2
    g = torch.exp(-(i**2) / (2 * max(alias_blur, 1e-6) ** 2))
    g = g / g.sum()
    return ops.filter2d(ops.filter2d(disk[None, None], g[None, :], "constant"), g[:, None], "constant")[0, 0]


@corruption(
    "defocus_blur",
    "blur",
    cifar=[(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    imagenet=[(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
)
def defocus_blur(x, c, s, g, root):
    """Convolution with a disk of radius c[0] (anti-aliased by σ = c[1]); borders reflected."""
    return ops.filter2d(x, disk_kernel(c[0] * s, c[1] * s), "reflect")


@corruption(
    "glass_blur",
    "blur",
    cifar=[(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    imagenet=[(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
)
def glass_blur(x, c, s, g, root):
    """Gaussian blur (σ = c[0]), `c[2]` rounds of local pixel scrambling within ±c[1] pixels, blur again.

    The original swaps pixels one at a time in reverse raster order; here every interior pixel takes
    the value at an independent random offset in [−δ, δ)² in one vectorised gather per round.
    """
    sigma, delta, rounds = c[0] * s, max(1, round(c[1] * s)), c[2]
    x = ops.gaussian_blur(x, sigma)
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :, None].expand(n, h, w)
    cols = torch.arange(w, device=x.device)[None, None, :].expand(n, h, w)
    interior = (rows > delta) & (rows <= h - delta) & (cols > delta) & (cols <= w - delta)
    for _ in range(rounds):
        dy = torch.randint(-delta, delta, (n, h, w), generator=g, device=g.device).to(x.device)
        dx = torch.randint(-delta, delta, (n, h, w), generator=g, device=g.device).to(x.device)
        src = torch.where(interior, (rows + dy) * w + cols + dx, rows * w + cols)
        x = x.flatten(2).gather(2, src.flatten(1)[:, None, :].expand(-1, x.shape[1], -1)).view_as(x)
    return ops.gaussian_blur(x, sigma)


@corruption(
    "motion_blur",
    "blur",
    cifar=[(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    imagenet=[(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
)
def motion_blur(x, c, s, g, root):
    """ImageMagick motion blur (radius c[0], σ = c[1]) at a uniform random angle in [−45°, 45°]."""
    return ops.motion_blur(x, c[0] * s, c[1] * s, ops.uniform((x.shape[0],), -45, 45, g))


@corruption(
    "zoom_blur",
    "blur",
    cifar=[(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
    imagenet=[(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)],
)
def zoom_blur(x, c, s, g, root):
    """Mean of x and its zooms into the centre by each factor of arange(c[0], c[1], c[2])."""
    factors = np.arange(*c)
    return (x + sum(ops.zoom(x, float(z)) for z in factors)) / (len(factors) + 1)
