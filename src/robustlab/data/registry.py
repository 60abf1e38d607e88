"""The dataset registry: name -> loader(root, val_fraction, seed, **options) -> ImageDataset."""

from __future__ import annotations

from ..registry import Registry
from .base import ImageDataset

DATASETS: Registry[ImageDataset] = Registry("dataset")
