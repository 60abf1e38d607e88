"""The analysis registry: name -> fn(ctx: AnalysisContext, **options) -> dict of JSON-able results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import ImageDataset
from ..models import ContractModel
from ..registry import Registry
from ..threat import ThreatModel


@dataclass
class AnalysisContext:
    """A trained model with its data, threat model and the place to write results."""

    model: ContractModel
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
