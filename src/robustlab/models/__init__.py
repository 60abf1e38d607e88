"""Model registry. Every model: Normalize -> features -> head, pixel-space input in [0, 1].

`create(name, num_classes, in_channels, input_size, mean=None, std=None, **kw)` builds a model;
`for_dataset(name, dataset, **kw)` takes the shape and normalisation from an ImageDataset.
"""

from __future__ import annotations

from typing import Any

from ..errors import RobustlabError
from ..registry import import_submodules
from .base import ContractModel, GlobalPool, ImageClassifier, Normalize, eval_mode
from .outside import OutsideModel, build_outside
from .registry import MODELS, ROBUSTBENCH

import_submodules(__name__, __path__)  # every module registers itself

MIN_SIZE = 8


def create(
    name: str,
    num_classes: int,
    in_channels: int,
    input_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    **kw: Any,
) -> ImageClassifier:
    """Build model `name` for `in_channels`×`input_size`² images and `num_classes` classes."""
    MODELS.get(name)  # unknown name -> error listing the known ones
    if in_channels not in (1, 3):
        raise RobustlabError(f"in_channels={in_channels!r}; allowed: 1 or 3.")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise RobustlabError(f"num_classes={num_classes!r}; allowed: an integer >= 2.")
    if not isinstance(input_size, int) or input_size < MIN_SIZE:
        raise RobustlabError(f"input_size={input_size!r}; allowed: an integer >= {MIN_SIZE}.")
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise RobustlabError(f"mean {mean} / std {std} must have {in_channels} entries (one per channel).")
    model = MODELS.create(name, num_classes, in_channels, input_size, mean, std, **kw)
    model.arch = name
    model.arch_kwargs = dict(kw)
    return model


def for_dataset(name: str, dataset: Any, **kw: Any) -> ImageClassifier:
    """Build model `name` for an ImageDataset (shape, class count and normalisation from the data)."""
    return create(name, dataset.num_classes, dataset.in_channels, dataset.input_size, dataset.mean, dataset.std, **kw)


def names() -> list[str]:
    return MODELS.names()


__all__ = [
    "MODELS",
    "ROBUSTBENCH",
    "ContractModel",
    "GlobalPool",
    "ImageClassifier",
    "Normalize",
    "OutsideModel",
    "build_outside",
    "create",
    "eval_mode",
    "for_dataset",
    "names",
]
