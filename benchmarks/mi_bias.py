"""Bias of the MI estimators against a known truth: correlated Gaussians X ~ N(0, I_d), Z = ρX + √(1−ρ²)ε,
I(X; Z) = −(d/2) log(1 − ρ²). For each batch size and estimator, a concat critic (hidden 64, as in the
tests) is trained for `--steps` steps of Adam (lr 2e-3) on fresh batches, then the estimate is averaged
over 20 test batches of the same size (the batch size enters the estimate itself, not only its noise);
mean ± std over `--seeds` seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/mi_bias.py                       # d = 10, ρ = 0.9
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/mi_bias.py --dims 2 --rho 0.8
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from robustlab.analysis.mi import fit_and_estimate
from robustlab.infomax import MIEstimator, make_critic

ESTIMATORS = {"dv": ("dv", None), "dv + moving average": ("dv", 0.01), "jsd-trained (DV value)": ("jsd", None),
              "infonce": ("infonce", None)}


def estimate(bound: str, ma_rate: float | None, dims: int, rho: float, batch: int, steps: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    noise = math.sqrt(1 - rho**2)

    def channel(x: torch.Tensor) -> torch.Tensor:  # fresh noise on every call: Z given X is random
        return rho * x + noise * torch.randn(x.shape, generator=g)

    torch.manual_seed(seed)
    estimator = MIEstimator(make_critic("concat", (dims,), dims, hidden=64), bound, "exact", ma_rate)
    train_x = torch.randn(steps * batch, dims, generator=g)
    test_x = torch.randn(20 * batch, dims, generator=g)
    return fit_and_estimate(channel, train_x, test_x, estimator, epochs=1, batch_size=batch, lr=2e-3, seed=seed)["mi"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, default=10)
    parser.add_argument("--rho", type=float, default=0.9)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    truth = -0.5 * args.dims * math.log(1 - args.rho**2)
    print(f"d = {args.dims}, rho = {args.rho}: true MI {truth:.3f} nats; {args.steps} steps; mean ± std over {args.seeds} seeds")
    print("| batch | log N | " + " | ".join(f"{e} − truth" for e in args.estimators) + " |")
    for batch in args.batches:
        cells = []
        for name in args.estimators:
            values = [estimate(*ESTIMATORS[name], args.dims, args.rho, batch, args.steps, s) - truth for s in range(args.seeds)]
            cells.append(f"{statistics.mean(values):+.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}")
        print(f"| {batch} | {math.log(batch):.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
