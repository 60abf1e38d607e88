"""Callbacks of the training layer itself (the paper-specific ones live with the analyses)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import checkpoint as ckpt
from ..errors import RobustlabError
from .registry import CALLBACKS, Callback

if TYPE_CHECKING:
    from .trainer import Trainer


@CALLBACKS.register("init_from")
class InitFrom(Callback):
    """Before the first epoch, copy the weights whose names start with one of `prefixes` from another
    run's selected checkpoint into the model (e.g. a pre-trained encoder under a new classifier).

    `run` is a run label of the same study (a sibling of this run's directory) or a path to a run
    directory or checkpoint. On resume nothing is copied: the weights are already in the training
    state. The source (path, epoch, config fingerprint) is recorded in the checkpoint's JSON.
    """

    def __init__(self, run: str, prefixes: tuple[str, ...] = ("normalize.", "body.", "neck.encoder.")):
        self.run, self.prefixes = run, tuple(prefixes)

    def source(self, run_dir: Path) -> Path:
        sibling = run_dir.parent / self.run
        return ckpt.resolve_checkpoint(sibling if sibling.exists() else self.run)

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.epoch > 0:
            return
        try:
            stem = self.source(trainer.run_dir)
        except RobustlabError as e:
            raise RobustlabError(
                f"init_from: run {self.run!r} has no checkpoint (train it first; a study trains runs in "
                f"the order listed): {e}"
            ) from None
        weights = {k: v for k, v in ckpt.load_weights(stem).items() if k.startswith(self.prefixes)}
        if not weights:
            raise RobustlabError(f"init_from {stem}: no weights start with {', '.join(self.prefixes)}.")
        own = trainer.model.state_dict()
        bad = [k for k in weights if k not in own or own[k].shape != weights[k].shape]
        if bad:
            raise RobustlabError(
                f"init_from {stem}: weights missing or of another shape in this model: {', '.join(bad[:5])}; "
                f"the two runs' architectures differ."
            )
        with torch.no_grad():
            for k, v in weights.items():
                own[k].copy_(v)
        meta = ckpt.load_meta(stem)
        trainer.meta["init_from"] = {
            "checkpoint": str(stem),
            "epoch": meta.get("epoch"),
            "tensors": len(weights),
            "config_fingerprint": meta.get("config_fingerprint"),
        }
