"""Digital corruptions: contrast, elastic transform, pixelate and JPEG compression."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from . import ops
from .registry import corruption


@corruption("contrast", "digital", cifar=[0.75, 0.5, 0.4, 0.3, 0.15], imagenet=[0.4, 0.3, 0.2, 0.1, 0.05])
def contrast(x, c, s, g, root):
    """(x − μ)·c + μ with μ the per-image, per-channel mean."""
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


def _imagenet_elastic(alpha: float, sigma: float, affine: float) -> tuple[float, float, float]:
    # ImageNet-C writes these as multiples of 244 for 224-pixel images; as fractions of the side:
    return tuple(v * 244 / 224 for v in (alpha, sigma, affine))  # type: ignore[return-value]


@corruption(
    "elastic_transform",
    "digital",
    cifar=[(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)],
    imagenet=[
        _imagenet_elastic(2, 0.7, 0.1),
        _imagenet_elastic(2, 0.08, 0.2),
        _imagenet_elastic(0.05, 0.01, 0.02),
        _imagenet_elastic(0.07, 0.01, 0.02),
        _imagenet_elastic(0.12, 0.01, 0.02),
    ],
)
def elastic_transform(x, c, s, g, root):
    """A random affine map (three control points around the centre moved by U(−c[2], c[2])), then a
    displacement field α·G_σ * U(−1, 1) per axis (α = c[0], σ = c[1]); all three are fractions of the
    image side. Bilinear sampling, borders reflected."""
    n, _, h, w = x.shape
    alpha, sigma, amount = c[0] * h, c[1] * h, c[2] * h
    centre, half = float(h // 2), float(h // 3)
    src = torch.tensor([[centre + half, centre + half], [centre + half, centre - half], [centre - half, centre - half]])
    dst = src + ops.uniform((n, 3, 2), -amount, amount, g).cpu()
    ones = torch.ones(n, 3, 1)
    forward = torch.linalg.solve(torch.cat([src.expand(n, 3, 2), ones], 2), dst).transpose(1, 2)  # N×2×3, src -> dst
    full = torch.cat([forward, torch.tensor([0.0, 0.0, 1.0]).expand(n, 1, 3)], 1)
    inverse = torch.linalg.inv(full)[:, :2].to(x.device)  # the output pixel p reads the input at M⁻¹ p
    field = ops.uniform((n, 2, h, w), -1, 1, g).to(x)
    field = alpha * ops.gaussian_blur(field, sigma, mode="reflect", truncate=3.0)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype), torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij"
    )
    px, py = xs + field[:, 0], ys + field[:, 1]
    qx = inverse[:, 0, 0, None, None] * px + inverse[:, 0, 1, None, None] * py + inverse[:, 0, 2, None, None]
    qy = inverse[:, 1, 0, None, None] * px + inverse[:, 1, 1, None, None] * py + inverse[:, 1, 2, None, None]
    grid = torch.stack([(qx + 0.5) / w * 2 - 1, (qy + 0.5) / h * 2 - 1], -1)
    return ops.sample(x, grid, padding="reflection")


@corruption("pixelate", "digital", cifar=[0.95, 0.9, 0.85, 0.75, 0.65], imagenet=[0.6, 0.5, 0.4, 0.3, 0.25])
def pixelate(x, c, s, g, root):
    """Box-downsample to int(side·c) and back up (area averaging down, nearest up)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


@corruption("jpeg_compression", "digital", cifar=[80, 65, 58, 50, 40], imagenet=[25, 18, 15, 10, 7])
def jpeg_compression(x, c, s, g, root):
    """JPEG encode and decode at quality c with Pillow (8-bit; one image at a time, Pillow has no batch API)."""
    from PIL import Image

    arr = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    mode = "L" if arr.shape[-1] == 1 else "RGB"
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if mode == "L" else img, mode).save(buf, "JPEG", quality=int(c))
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x) / 255
