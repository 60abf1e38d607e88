"""Cost of worst-case MI estimation per epoch, as a ratio to normal-case estimation (Zhu et al.).

One critic epoch on the digits training split, for the representation of a small_cnn: the normal
case is one critic step per batch; the worst case adds the batch-level PGD-k that minimises the
estimate (k forward+backward passes through encoder and critic, plus one forward for keep-best).
Expected ratio ≈ k + 1. CPU time of this process (robust to other jobs on a shared machine), best
of `REPEATS`.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/mi_cost.py
"""

from __future__ import annotations

import time

import torch

from robustlab import data, models
from robustlab.analysis.mi import fit_and_estimate
from robustlab.attacks.base import model_untouched
from robustlab.infomax import MIEstimator, make_critic
from robustlab.threat import ThreatModel

REPEATS = 3
STEPS = (1, 3, 5, 7)


def epoch_seconds(model, ds, threat, steps: int) -> float:
    best = float("inf")
    for r in range(REPEATS):
        torch.manual_seed(r)
        critic = make_critic("local_global", (1, 8, 8), model.feature_dim, ds.mean, ds.std, hidden=128, width=(32, 64))
        estimator = MIEstimator(critic, "dv")
        t0 = time.process_time()
        with model_untouched(model):
            fit_and_estimate(model.forward_features, ds.train.x, ds.test.x[:64], estimator, threat=threat,
                             attack_steps=steps, epochs=1, batch_size=64, seed=r)
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    torch.set_num_threads(1)
    ds = data.load("digits")
    torch.manual_seed(0)
    model = models.for_dataset("small_cnn", ds).eval()
    normal = epoch_seconds(model, ds, None, 0)
    print(f"digits, small_cnn features (128-d), local_global critic (hidden 128), batch 64, {len(ds.train)} training images")
    print(f"normal-case MI: {normal:.3f} s CPU per epoch (+ test estimate on 64 images)")
    print("attack steps k | worst-case s/epoch | ratio to normal | expected k + 1")
    for k in STEPS:
        worst = epoch_seconds(model, ds, ThreatModel.parse("linf:0.2"), k)
        print(f"{k:>14} | {worst:>18.3f} | {worst / normal:>15.2f} | {k + 1:>14}")


if __name__ == "__main__":
    main()
