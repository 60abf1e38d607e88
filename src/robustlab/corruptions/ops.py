"""Batched image operations the corruptions share (torch, N×C×H×W in [0, 1], per-sample randomness)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-d Gaussian with radius int(truncate·σ + 0.5) (scipy/skimage's rule)."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return torch.ones(1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """Correlate every channel of every image with one 2-d kernel (kh×kw, odd sides), same-size output."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    padded = F.pad(x.reshape(n * c, 1, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode=_pad_mode(mode, kh, kw, h, w))
    return F.conv2d(padded, kernel.to(x)[None, None]).reshape(n, c, h, w)


def _pad_mode(mode: str, kh: int, kw: int, h: int, w: int) -> str:
    # reflect padding needs pad < side; larger kernels on tiny images fall back to edge replication
    return "replicate" if mode == "reflect" and (kh // 2 >= h or kw // 2 >= w) else mode


def gaussian_blur(x: torch.Tensor, sigma: float, mode: str = "replicate", truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur (skimage.filters.gaussian with mode 'nearest' = edge replication)."""
    k = gaussian_kernel1d(sigma, truncate)
    if k.numel() == 1:
        return x
    return filter2d(filter2d(x, k[None, :], mode), k[:, None], mode)


def identity_grid(n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates (x, y) in grid_sample's [−1, 1] convention (align_corners=False), N×H×W×2."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).expand(n, h, w, 2)


def sample(x: torch.Tensor, grid: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Bilinear sampling at `grid` (N×H×W×2, [−1, 1] coordinates)."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=False)


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by `factor` ≥ 1, keeping the size (the 'clipped zoom' of Hendrycks et al.)."""
    n, _, h, w = x.shape
    return sample(x, identity_grid(n, h, w, x.device) / factor)


def shift_pixels(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Sample each image at (x + dx, y + dy) in pixels; dx, dy broadcast to N×H×W."""
    n, _, h, w = x.shape
    grid = identity_grid(n, h, w, x.device) + torch.stack([dx * 2 / w, dy * 2 / h], -1).expand(n, h, w, 2)
    return sample(x, grid, padding)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur: a one-sided trail of 2·⌈radius⌉ + 1 taps along the per-sample angle
    (N,) in degrees, tap i weighted exp(−i²/2σ²); edges replicated. Taps are sampled bilinearly."""
    taps = 2 * math.ceil(radius) + 1
    i = torch.arange(taps, dtype=torch.float32, device=x.device)
    weight = torch.exp(-(i**2) / (2 * max(sigma, 1e-6) ** 2))
    weight = weight / weight.sum()
    theta = angle_deg.to(x.device).float() * math.pi / 180
    out = torch.zeros_like(x)
    for t in range(taps):  # taps, not samples: every image of the batch moves at once
        out += weight[t] * shift_pixels(x, (t * torch.cos(theta))[:, None, None], (t * torch.sin(theta))[:, None, None])
    return out


def plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """N diamond-square height maps (size × size, size a power of two), each rescaled to [0, 1].

    Corners start at 0 with 'wibble' 100; at each halving of the step the new points are the mean of
    their four neighbours (wrapping around) plus U(−wibble², wibble²)-scaled noise, and wibble /= decay.
    """
    dev = generator.device
    m = torch.zeros(n, size, size, device=dev)
    step, wibble = size, 100.0

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * (2 * torch.rand(total.shape, generator=generator, device=dev) - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        square = corners + corners.roll(-1, 1)
        m[:, half::step, half::step] = noisy_mean(square + square.roll(-1, 2))
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = noisy_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, 0::step] = noisy_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step = half
        wibble /= decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) as N×1×H×W; one-channel images are returned as is."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )


def uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=generator.device)
