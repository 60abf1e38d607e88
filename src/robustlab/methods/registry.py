"""The method registry: name -> Method class (keyword options = its hyper-parameters)."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import Method

METHODS: Registry[Callable[..., Method]] = Registry("method")
