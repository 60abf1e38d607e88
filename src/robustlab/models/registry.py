"""The model registry: name -> builder(num_classes, in_channels, input_size, mean, std, **kw)."""

from __future__ import annotations

from ..registry import Registry
from .base import ImageClassifier

MODELS: Registry[ImageClassifier] = Registry("model")
