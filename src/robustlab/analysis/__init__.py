"""Diagnostics that work on any trained model, one module per analysis.

An analysis is registered in `ANALYSES` as fn(ctx: AnalysisContext, **options) -> dict (JSON-able
results); `robustlab analyze RUN --what NAME[,NAME]` runs them and writes
RUN/analysis/NAME.json and any figures into RUN/figures/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import ImageDataset
from ..registry import Registry, import_submodules
from ..threat import ThreatModel


@dataclass
class AnalysisContext:
    """A trained model with its data, threat model and the place to write results."""

    model: torch.nn.Module
    dataset: ImageDataset
    threat: ThreatModel
    run_dir: Path
    meta: dict[str, Any]
    device: torch.device
    seed: int = 0
    quiet: bool = False

    def figure_path(self, name: str) -> Path:
        d = self.run_dir / "figures"
        d.mkdir(parents=True, exist_ok=True)
        return d / name


ANALYSES: Registry[Callable[..., dict[str, Any]]] = Registry("analysis")

import_submodules(__name__, __path__)  # every analysis module registers itself

__all__ = ["ANALYSES", "AnalysisContext"]
