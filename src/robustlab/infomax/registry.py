"""The critic registry: name -> factory(x_shape, z_dim, mean, std, **options) of a critic T(x, z) (critics.py)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

CRITICS: Registry[Callable[..., nn.Module]] = Registry("critic")
