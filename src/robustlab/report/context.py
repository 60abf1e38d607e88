"""What a report section sees: the study's runs (config, run directory, evaluation, history)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import read_json
from ..config import OutsideConfig, RunConfig, StudyConfig
from ..data import ImageDataset
from ..evaluate import EvalResult
from ..rundir import write_text_atomic
from .roles import Cast


@dataclass
class RunRecord:
    label: str
    group: str
    config: RunConfig
    run_dir: Path
    eval: EvalResult  # the run's main suite (a study evaluates every run before its report)
    extra: dict[str, EvalResult] = field(default_factory=dict)  # the eval config's extra suites by name
    train_seconds: float = 0.0
    reused: bool = False
    role: str | None = None  # the study config's `role:` of the run: what report sections find it by
    outside: OutsideConfig | None = None  # a model robustlab did not train (no checkpoint, no history)

    @property
    def history(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    @property
    def meta(self) -> dict[str, Any]:
        if self.outside is not None:
            return {"outside": self.outside.model_dump()}
        return read_json(self.run_dir / "model.json")


@dataclass
class StudyContext:
    """Shared state for report sections; sections add markdown and figures, and may cache analyses."""

    study: StudyConfig
    out_dir: Path
    records: list[RunRecord]
    device: torch.device
    quiet: bool = False
    data_root: str | None = None
    _datasets: dict[str, ImageDataset] = field(default_factory=dict)
    _models: dict[str, torch.nn.Module] = field(default_factory=dict)

    @property
    def figures_dir(self) -> Path:
        d = self.out_dir / "figures"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def figure(self, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to report.md) for figure `name` (a .png file name)."""
        return self.figures_dir / name, f"figures/{name}"

    def runs(self, group: str | None = "main") -> list[RunRecord]:
        return [r for r in self.records if group is None or r.group == group]

    def by_role(self, group: str, role: str) -> RunRecord | None:
        """The run of `group` that the study config gives `role` (None when no run has it)."""
        return next((r for r in self.records if r.group == group and r.role == role), None)

    def cast(self, groups: Sequence[str], roles: Iterable[str]) -> Cast:
        """The runs playing `roles`, each from the first of `groups` that has a run in that role."""
        found, missing = {}, []
        for role in roles:
            run = next((r for g in groups if (r := self.by_role(g, role)) is not None), None)
            if run is None:
                missing.append(role)
            else:
                found[role] = run
        return Cast(tuple(groups), found, missing)

    def dataset(self, record: RunRecord) -> ImageDataset:
        from .. import data

        key = json_key(record.config.dataset.model_dump())
        if key not in self._datasets:
            ds = record.config.dataset
            self._datasets[key] = data.load(ds.name, root=self.data_root, **ds.options)
        return self._datasets[key]

    def model(self, record: RunRecord) -> torch.nn.Module:
        """The run's selected model, in eval mode on the study's device."""
        from ..checkpoint import load_model

        if record.label not in self._models:
            self._models[record.label] = (
                outside_model(record.outside, self.dataset(record), self.device)
                if record.outside is not None
                else load_model(record.run_dir, self.device)[0]
            )
        return self._models[record.label]

    def cached(self, record: RunRecord, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A JSON analysis result stored in the run's analysis/ directory, computed once."""
        path = record.run_dir / "analysis" / f"{key}.json"
        if path.exists():
            return read_json(path)
        result = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=2))
        return result

    def analysis(self, record: RunRecord, name: str, **options: Any) -> dict[str, Any]:
        """A registered analysis (robustlab.analysis.ANALYSES) of the run's selected model, cached per options."""
        from ..analysis import ANALYSES, AnalysisContext

        key = f"{name}_" + hashlib.sha256(json_key(options).encode()).hexdigest()[:10]

        def compute() -> dict[str, Any]:
            actx = AnalysisContext(
                self.model(record),
                self.dataset(record),
                record.config.threat_model,
                record.run_dir,
                record.meta,
                self.device,
                quiet=self.quiet,
            )
            return ANALYSES.create(name, actx, **options)

        return self.cached(record, key, compute)


def outside_model(outside: OutsideConfig, dataset: ImageDataset, device: torch.device) -> torch.nn.Module:
    """A study's outside model with its weights and normalisation, for `dataset`'s images and classes."""
    from ..checkpoint import load_outside_model

    return load_outside_model(
        outside.model,
        outside.weights,
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        mean=tuple(outside.mean) if outside.mean is not None else None,
        std=tuple(outside.std) if outside.std is not None else None,
        feature_layer=outside.feature_layer,
        device=device,
    )


def json_key(d: Any) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def paired_difference(a: Any, b: Any) -> tuple[float, float]:
    """For per-sample outcomes of two models on the same points: mean(a − b) and its standard error, in points."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    se = float(d.std(ddof=1)) / math.sqrt(d.size) if d.size > 1 else 0.0
    return 100 * float(d.mean()), 100 * se


def direction(delta: float, se: float) -> int:
    """Which way a measured difference points: +1 above two standard errors, −1 below minus two, 0 within noise.

    Every verdict of the report sections ("higher", "reproduced", ...) that rests on a difference with a
    standard error goes through here, so they all draw the line at the same place."""
    return 1 if delta > 2 * se else -1 if delta < -2 * se else 0
