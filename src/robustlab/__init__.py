"""robustlab: train, attack and analyse adversarially robust models in pixel space.

`robustlab.evaluate_model(model, x, y, threat, suite)` evaluates any nn.Module (robustlab.evaluate.evaluate_model).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "evaluate_model":  # imported on first use: `import robustlab` stays light
        from .evaluate import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
