"""Cost of AALP over ALP: the ratio of an `aalp` training epoch to an `alp` epoch on the same data.

AALP adds one forward/backward through the head (for the Guided Dropout scores R) and a softmax for the
sample weights; the PGD attack, which dominates both, is the same. Epochs of the methods are interleaved
and repeated, and the median of each is compared, so that a shared machine's load affects all alike. The
process CPU time is the primary measure (with one thread it is close to the wall time on an idle machine
and much less sensitive to other jobs); the wall time is printed beside it.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/aalp_overhead.py [--model small_cnn] [--repeats 5]

Target: aalp / alp ≤ 1.15.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab import data, methods, models
from robustlab.data import batches
from robustlab.methods import StepContext


def epoch_seconds(method_name: str, model: torch.nn.Module, split, batch_size: int, threat: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one training epoch of `method_name`."""
    method = methods.create(method_name, threat=threat)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    model.train()
    c0, t0 = time.process_time(), time.perf_counter()
    for x, y in batches(split, batch_size, shuffle=True, generator=torch.Generator().manual_seed(1)):
        loss, _ = method.loss(model, x, y, StepContext(generator=gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.process_time() - c0, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threat", default="linf:0.2")
    args = p.parse_args()
    ds = data.load("digits")
    names = ["alp", "aalp", "aalp_gd", "aalp_sw"]
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    torch.manual_seed(0)
    base = models.for_dataset(args.model, ds)
    for _ in range(args.repeats):
        for n in names:  # interleaved, each from the same initial weights
            model = models.for_dataset(args.model, ds)
            model.load_state_dict(base.state_dict())
            times[n].append(epoch_seconds(n, model, ds.train, args.batch_size, args.threat))
    cpu = {n: statistics.median(c for c, _ in v) for n, v in times.items()}
    wall = {n: statistics.median(w for _, w in v) for n, v in times.items()}
    print(f"digits train split ({len(ds.train)} images), {args.model}, batch {args.batch_size}, PGD-10 training attack, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} epochs each")
    for n in names:
        print(f"  {n:<8} CPU {cpu[n]:7.3f} s/epoch (ratio to alp {cpu[n] / cpu['alp']:5.3f})   "
              f"wall {wall[n]:7.3f} s (ratio {wall[n] / wall['alp']:5.3f})")
    print(f"aalp / alp = {cpu['aalp'] / cpu['alp']:.3f} (CPU time), {wall['aalp'] / wall['alp']:.3f} (wall)  (target <= 1.15)")


if __name__ == "__main__":
    main()
