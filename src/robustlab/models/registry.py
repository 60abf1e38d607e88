"""The model registry: name -> builder(num_classes, in_channels, input_size, mean, std, **kw)."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import ImageClassifier

MODELS: Registry[Callable[..., ImageClassifier]] = Registry("model")
