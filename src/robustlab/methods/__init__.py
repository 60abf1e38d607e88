"""Training objectives, one module per paper: `create(name, threat=..., **hyper_parameters)`."""

from __future__ import annotations

from typing import Any

from ..registry import import_submodules
from .base import Method, StepContext, TrainAttack, accuracy, train_attack_options
from .registry import METHODS

import_submodules(__name__, __path__)  # every module registers itself


def create(name: str, threat: Any = None, **options: Any) -> Method:
    """Build method `name`; `options` are its hyper-parameters (validated, unknown keys rejected)."""
    return METHODS.create(name, threat=threat, skip=("threat",), **options)


def names() -> list[str]:
    return METHODS.names()


__all__ = ["METHODS", "Method", "StepContext", "TrainAttack", "accuracy", "create", "names", "train_attack_options"]
