"""Batched augmentation on image tensors (no per-sample Python loops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import RobustlabError
from .base import AugmentSpec

PAD_MODES = {
    "constant": "constant",
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "edge": "replicate",
}


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator, pad_mode: str = "constant") -> torch.Tensor:
    """Pad every image by `padding` pixels and crop it back at a random offset, per sample."""
    if padding <= 0:
        return x
    if pad_mode not in PAD_MODES:
        raise RobustlabError(f"pad_mode={pad_mode!r}; allowed: {', '.join(PAD_MODES)}.")
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=PAD_MODES[pad_mode])
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # N×1×H×1
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # N×1×1×W
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def apply(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """Apply `spec` to a batch; returns a new tensor in [0, 1]."""
    if spec.crop_padding:
        x = random_crop(x, spec.crop_padding, generator, spec.pad_mode)
    if spec.flip:
        x = random_flip(x, generator)
    return x
