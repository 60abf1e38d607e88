"""Training objectives, one module per paper: `create(name, threat=..., **hyper_parameters)`."""

from __future__ import annotations

from typing import Any

from . import alp, pgd_at, standard, trades  # noqa: F401  (register)
from .base import Method, StepContext, accuracy
from .registry import METHODS


def create(name: str, threat: Any = None, **options: Any) -> Method:
    """Build method `name`; `options` are its hyper-parameters (validated, unknown keys rejected)."""
    return METHODS.create(name, threat=threat, skip=("threat",), **options)


def names() -> list[str]:
    return METHODS.names()


__all__ = ["METHODS", "Method", "StepContext", "accuracy", "create", "names"]
