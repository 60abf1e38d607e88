"""The suite registry: name -> a function returning the suite's list of attack specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry

SUITES: Registry[Callable[[], list[str | dict[str, Any]]]] = Registry("suite")
