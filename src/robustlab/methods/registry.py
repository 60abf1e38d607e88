"""The method registry: name -> Method class (keyword options = its hyper-parameters)."""

from __future__ import annotations

from ..registry import Registry
from .base import Method

METHODS: Registry[Method] = Registry("method")
