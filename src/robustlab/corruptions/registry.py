"""The corruption registry: each corruption with its published parameters at the two reference sizes.

A corruption is `fn(x, c, s, generator, root) -> x'` on N×C×H×W images in [0, 1], where `c` is the row
of its parameter table for the severity and `s` the factor for parameters measured in pixels. The
tables are those of Hendrycks & Dietterich (ICLR 2019): `cifar` for 32×32 (CIFAR-10-C) and `imagenet`
for 224×224 (ImageNet-C).

Other sizes (`scale_for`): images of side ≥ 128 use the ImageNet-C table with pixel parameters × side/224;
smaller images use the CIFAR-10-C table with pixel parameters × max(1, side/32). So the 8×8 digits
use CIFAR-10-C's values unchanged: one digits pixel is treated like one CIFAR pixel (blur radii are
not shrunk to sub-pixel sizes, where the blurs would vanish); parameters that are fractions of the
image (zoom factors, pixelation, elastic displacements, fog map) scale with the image by definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..registry import Registry

SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str  # noise | blur | weather | digital
    fn: Callable[..., torch.Tensor]
    cifar: Sequence[Any]  # 5 parameter rows for 32×32
    imagenet: Sequence[Any]  # 5 parameter rows for 224×224
    needs_files: str = ""  # what must be under the data root, if anything

    def params(self, severity: int, size: int) -> tuple[Any, float]:
        """(parameter row, pixel scale) for an image side `size`."""
        table, s = (self.imagenet, size / 224) if size >= 128 else (self.cifar, max(1.0, size / 32))
        return table[severity - 1], s


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def corruption(
    name: str, family: str, cifar: Sequence[Any], imagenet: Sequence[Any], needs_files: str = ""
) -> Callable:
    """Register `fn` as corruption `name` with its CIFAR-10-C and ImageNet-C parameter tables."""

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        CORRUPTIONS.register(name)(Corruption(name, family, fn, tuple(cifar), tuple(imagenet), needs_files))
        return fn

    return deco
