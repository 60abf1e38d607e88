"""The report-section registry: name -> fn(ctx: StudyContext, **options) -> markdown.

A section that reads runs by role declares them with `reads_roles` (see report/roles.py)."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry

SECTIONS: Registry[Callable[..., str]] = Registry("report section")
