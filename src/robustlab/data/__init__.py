"""Datasets in pixel space: every loader returns an `ImageDataset` of N×C×H×W float images in [0, 1].

`load(name, root=None, val_fraction=..., seed=0, **options)` reads a dataset from its standard on-disk
format under the data root (`--data-root`, else $ROBUSTLAB_DATA, else ./data). `digits` is embedded;
mnist / fashion_mnist (idx), cifar10 / cifar100 (python pickles), svhn (.mat), npz and imagefolder read files.
"""

from __future__ import annotations

from typing import Any

from ..registry import import_submodules
from .base import AugmentSpec, ImageDataset, Split, check_images, check_labels, data_root
from .loader import batches, num_batches
from .registry import DATASETS

import_submodules(__name__, __path__)  # every loader module registers itself


def load(name: str, root: Any = None, **options: Any) -> ImageDataset:
    """Load dataset `name` (see `names()`); `options` are the loader's keyword arguments."""
    return DATASETS.create(name, root=root, skip=("root",), **options)


def names() -> list[str]:
    return DATASETS.names()


__all__ = [
    "AugmentSpec",
    "ImageDataset",
    "Split",
    "batches",
    "check_images",
    "check_labels",
    "data_root",
    "load",
    "names",
    "num_batches",
]
