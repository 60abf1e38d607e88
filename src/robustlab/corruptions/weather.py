"""Weather corruptions: snow, frost (needs the frost photographs), fog and brightness."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import RobustlabError
from . import ops
from .registry import corruption

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


@corruption(
    "snow",
    "weather",
    cifar=[
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    imagenet=[
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ],
)
def snow(x, c, s, g, root):
    """Flakes: N(c[0], c[1]²) per pixel, zoomed by c[2], zeroed below c[3], motion-blurred (radius c[4],
    σ = c[5], angle in [−135°, −45°]); the image is whitened towards max(x, 1.5·gray + 0.5) with weight
    1 − c[6]; flakes are added twice (as is and rotated by 180°)."""
    n, _, h, w = x.shape
    layer = (c[0] + c[1] * torch.randn((n, 1, h, w), generator=g, device=g.device)).to(x)
    layer = ops.zoom(layer, c[2])
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer).clamp(0, 1)
    layer = ops.motion_blur(layer, c[4] * s, c[5] * s, ops.uniform((n,), -135, -45, g))
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, ops.grayscale(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def _frost_textures(root: Path | None, scale: float, channels: int) -> list[torch.Tensor]:
    from PIL import Image

    folder = Path(root) / "frost" if root is not None else None
    found = [folder / f for f in FROST_FILES[:5] if folder is not None and (folder / f).exists()]
    if not found:
        raise RobustlabError(
            f"frost: the frost photographs ({', '.join(FROST_FILES[:5])}, from Hendrycks & Dietterich's "
            f"ImageNet-C code) are not in {folder}; put them there to evaluate frost."
        )
    out = []
    for path in found:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            im = im.resize(
                (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR
            )
            out.append(
                torch.from_numpy(np.asarray(im, dtype=np.float32).copy())
                .reshape(im.height, im.width, channels)
                .permute(2, 0, 1)
                / 255
            )
    return out


@corruption(
    "frost",
    "weather",
    cifar=[(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    imagenet=[(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    needs_files="frost/frost1.png ... frost5.jpg",
)
def frost(x, c, s, g, root):
    """c[0]·x + c[1]·(a random crop of a frost photograph). CIFAR-10-C shrinks the photographs to 0.2 of
    their size, ImageNet-C uses them as they are; other sizes scale that by the pixel factor."""
    n, ch, h, w = x.shape
    textures = [
        t for t in _frost_textures(root, (0.2 if h < 128 else 1.0) * s, ch) if t.shape[1] > h and t.shape[2] > w
    ]
    if not textures:
        raise RobustlabError(f"frost: the frost photographs are smaller than the {h}×{w} images.")
    which = torch.randint(0, len(textures), (n,), generator=g, device=g.device).cpu()
    layer = torch.empty_like(x)
    for k, tex in enumerate(textures):  # per texture (≤ 5), every image that drew it at once
        idx = torch.nonzero(which == k).flatten()
        if len(idx) == 0:
            continue
        top = torch.randint(0, tex.shape[1] - h, (len(idx),), generator=g, device=g.device).cpu()
        left = torch.randint(0, tex.shape[2] - w, (len(idx),), generator=g, device=g.device).cpu()
        rows = (top[:, None] + torch.arange(h))[:, None, :, None]
        cols = (left[:, None] + torch.arange(w))[:, None, None, :]
        layer[idx.to(x.device)] = tex[torch.arange(ch)[None, :, None, None], rows, cols].to(x)
    return c[0] * x + c[1] * layer


@corruption(
    "fog",
    "weather",
    cifar=[(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    imagenet=[(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
)
def fog(x, c, s, g, root):
    """x + c[0]·(plasma fractal with decay c[1]), rescaled by max(x) / (max(x) + c[0])."""
    n, _, h, w = x.shape
    size = 2 ** math.ceil(math.log2(max(h, w)))
    cloud = ops.plasma_fractal(n, size, c[1], g)[:, None, :h, :w].to(x)
    peak = x.amax((1, 2, 3), keepdim=True)
    return (x + c[0] * cloud) * peak / (peak + c[0])


@corruption("brightness", "weather", cifar=[0.05, 0.1, 0.15, 0.2, 0.3], imagenet=[0.1, 0.2, 0.3, 0.4, 0.5])
def brightness(x, c, s, g, root):
    """HSV value V → clip(V + c) with hue and saturation kept: RGB scales by V'/V (black becomes gray V')."""
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))
