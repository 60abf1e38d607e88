"""`evaluate_model`: robustlab's evaluation of any `nn.Module`, on data given as arrays, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import FlagConfig
from ..data import check_labels
from ..data.npz import as_split
from ..errors import RobustlabError
from ..models import OutsideModel
from ..threat import ThreatModel
from ..ui import console
from .result import EvalResult
from .run import check_outputs, evaluate


def evaluate_model(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    threat: ThreatModel | str,
    suite: str | list[str | dict[str, Any]] = "paper",
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    flags: FlagConfig | bool = True,
    step: float | None = None,
    step_ratio: float = 0.25,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str | None = None,
    quiet: bool = False,
    state_path: str | Path | None = None,
) -> EvalResult:
    """Evaluate `model` (any nn.Module mapping images to logits) on images `x` with labels `y`.

    `x`: numpy or torch, uint8 0..255 or float in [0, 1], N×C×H×W, N×H×W×C or N×H×W (the layout assumed is
    printed); `y`: integer labels of any dtype. `mean`/`std`: the normalisation the model expects, put in front
    of it as its first layer, so the attacks work in pixel space [0, 1]. `suite`: a suite name (`paper`,
    `autoattack`, `autoattack-rand`, ... as on the command line) or a list of attack specs. Returns the
    EvalResult a run's evaluation returns: per-attack accuracy, per-sample worst case, AutoAttack's stages,
    the sanity flags (`flags=False` skips them).
    """
    split, layout = as_split(x, y, "evaluate_model")
    if not isinstance(model, nn.Module):
        raise RobustlabError(
            f"evaluate_model: model is a {type(model).__name__}; allowed: a torch.nn.Module mapping images to logits."
        )
    if not quiet:
        console.print(f"evaluate_model: {len(split)} images read as {layout}, {split.x.shape[1]} channel(s)")
    where = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device) if device is not None else where
    wrapped = OutsideModel(
        model,
        tuple(mean) if mean is not None else None,
        tuple(std) if std is not None else None,
        in_channels=int(split.x.shape[1]),
        name="evaluate_model",
    ).to(device)
    num_classes = output_classes(wrapped, split.x[:2].to(device))
    check_labels("evaluate_model", split.y, num_classes)
    return evaluate(
        wrapped,
        split,
        threat,
        suite,
        step=step,
        step_ratio=step_ratio,
        batch_size=batch_size,
        seed=seed,
        device=device,
        quiet=quiet,
        num_classes=num_classes,
        flags=(FlagConfig() if flags is True else flags) or None,
        state_path=state_path,
    )


@torch.no_grad()
def output_classes(model: nn.Module, x: torch.Tensor) -> int:
    """K, the number of logits the model returns for the batch `x`; N×K logits (not probabilities) or an error."""
    was = model.training
    model.eval()
    try:
        logits = model(x)
    except (RuntimeError, ValueError, TypeError) as e:  # a layer that does not fit the images (size, channels)
        if isinstance(e, RobustlabError):
            raise
        why = " ".join(str(e).split())[:300]
        raise RobustlabError(
            f"the model fails on images of shape {tuple(x.shape[1:])} ({type(e).__name__}: {why}); allowed: images "
            "of the size and channel count it was built for."
        ) from None
    finally:
        model.train(was)
    if not torch.is_tensor(logits) or logits.dim() != 2:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise RobustlabError(
            f"the model returns {shape} for {x.shape[0]} images; allowed: logits of shape ({x.shape[0]}, K)."
        )
    check_outputs(logits, x.shape[0], None)
    return int(logits.shape[1])
