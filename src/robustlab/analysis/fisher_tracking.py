"""`fisher_tracking`: a Trainer callback that records Shi et al.'s quantities after every epoch (Fig. 3–4).

Configured as `callbacks: [{name: fisher_tracking, n: 512, anchors: 16, partners: 64, every: 1}]`. Per epoch it
adds to metrics.jsonl, on a fixed seeded part of `split` (the test split by default):

- track_acc: accuracy on the whole split;
- track_fisher_trace / track_fisher_fro / track_fisher_spectral: mean trace, Frobenius and spectral norm
  of the input Fisher over `n` fixed samples (exact, see robustlab.attacks.fisher);
- track_cckl: exact CCKL over all cross-category pairs of the split; track_cckl_bound: its label-JS
  lower bound; track_cckl_fisher / track_cckl_remainder: the mean quadratic Fisher term and the
  remainder over `anchors` × `partners` fixed pairs (track_cckl_sampled: the mean KL of those pairs);
- track_seconds: the wall time the callback took.

These are analysis curves only: model selection reads the validation keys (val_*) and never these, so
following the test split per epoch does not leak into selection. The callback draws from its own
generator and restores the model's mode, so a run with it trains to the same weights as one without.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch

from ..registry import check_range
from ..train import CALLBACKS, Callback
from .cckl import cckl_summary
from .fisher import fisher_norms


@CALLBACKS.register("fisher_tracking")
class FisherTracking(Callback):
    """Mean input-Fisher norms, accuracy and CCKL with its two components per epoch (see module doc)."""

    def __init__(
        self,
        split: Literal["test", "val"] = "test",
        n: int = 512,
        anchors: int = 16,
        partners: int = 64,
        every: int = 1,
        seed: int = 0,
    ):
        for name, value in (("n", n), ("anchors", anchors), ("partners", partners), ("every", every)):
            check_range(f"fisher_tracking {name}", value, 1)
        self.split, self.n, self.anchors, self.partners, self.every, self.seed = (
            split,
            n,
            anchors,
            partners,
            every,
            seed,
        )

    def on_epoch_end(self, trainer, epoch: int, record: dict[str, Any]) -> dict[str, Any] | None:
        if epoch % self.every and epoch != trainer.cfg.epochs:
            return None
        t0 = time.perf_counter()
        data = trainer.dataset.split(self.split).to(trainer.device)
        subset = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))[: self.n].to(
            trainer.device
        )
        norms = fisher_norms(trainer.model, data.x[subset])
        s = cckl_summary(
            trainer.model,
            data.x,
            data.y,
            anchors=self.anchors,
            partners=self.partners,
            pairwise_js=False,
            seed=self.seed,
        )
        return {
            "track_acc": s["accuracy"],
            "track_fisher_trace": float(norms["trace"].mean()),
            "track_fisher_fro": float(norms["frobenius"].mean()),
            "track_fisher_spectral": float(norms["spectral"].mean()),
            "track_cckl": s["cckl"],
            "track_cckl_bound": s["bound_label_js"],
            "track_cckl_sampled": s["cckl_sampled"],
            "track_cckl_fisher": s["fisher_term"],
            "track_cckl_remainder": s["remainder"],
            "track_seconds": time.perf_counter() - t0,
        }
