"""Training callbacks: per-epoch extras the Trainer calls, and their registry.

The analyses register the paper-specific callbacks (Fisher tracking, AALP's ALP loss by set): they sit
above the training layer, so the registry names their package as a plugin and imports it on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Per-epoch extras. `on_epoch_end` may return metrics to add to the epoch's record."""

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, record: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def on_train_end(self, trainer: Trainer) -> None:
        pass


CALLBACKS: Registry[Callable[..., Callback]] = Registry("callback", plugins=("robustlab.analysis",))
