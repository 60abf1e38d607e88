"""Diagnostics that work on any trained model, one module per analysis.

An analysis is registered in `ANALYSES` as fn(ctx: AnalysisContext, **options) -> dict (JSON-able
results); `robustlab analyze RUN --what NAME[,NAME]` runs them and writes
RUN/analysis/NAME.json and any figures into RUN/figures/.
"""

from __future__ import annotations

from ..registry import import_submodules
from .registry import ANALYSES, AnalysisContext

import_submodules(__name__, __path__)  # every analysis module registers itself

__all__ = ["ANALYSES", "AnalysisContext"]
