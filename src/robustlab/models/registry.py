"""The model registry: name -> builder(num_classes, in_channels, input_size, mean, std, **kw)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry
from .base import ImageClassifier

MODELS: Registry[Callable[..., ImageClassifier]] = Registry("model")

# RobustBench's architectures by family (`robustbench:wrn-28-10` -> family "wrn", depth 28, width 10): plain
# nn.Modules with RobustBench's parameter names, not ImageClassifiers (models/robustbench.py)
ROBUSTBENCH: Registry[Callable[..., nn.Module]] = Registry("robustbench architecture")
