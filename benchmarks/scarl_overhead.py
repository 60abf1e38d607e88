"""Cost of SCARL's extra parts (projection heads, MI and structure terms, text bank) over TRADES.

Both objectives train with the same TRADES-KL PGD attack, so the ratio scarl/trades per training step
shows what the semantic terms add. Steps of the two methods are interleaved and the median of the
repeats is reported, which keeps the ratio meaningful on a shared machine (absolute times are not).

    OMP_NUM_THREADS=1 python benchmarks/scarl_overhead.py [--repeats 5] [--cifar-width 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch

from robustlab import data, methods, models
from robustlab.methods import StepContext


def step_time(model, method, x, y, opt, steps: int) -> float:
    """Seconds per training step (attack + loss + backward + optimizer step)."""
    ctx = StepContext(epoch=1, num_epochs=2, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = method.loss(model, x, y, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def compare(name: str, model_fn, x, y, class_names, threat: str, attack_steps: int, repeats: int, steps: int, vectors: str) -> None:
    times: dict[str, list[float]] = {"trades": [], "scarl": []}
    setups = {}
    for kind in times:
        torch.manual_seed(0)
        model = model_fn().train()
        options = {"vectors": vectors} if kind == "scarl" else {}
        method = methods.create(kind, threat=threat, attack_steps=attack_steps, **options)
        if kind == "scarl":
            method.build_parts(model, SimpleNamespace(class_names=class_names))
        method.train()
        opt = torch.optim.SGD(list(model.parameters()) + list(method.parameters()), lr=0.01, momentum=0.9)
        step_time(model, method, x, y, opt, 1)  # warm-up
        setups[kind] = (model, method, opt)
    for _ in range(repeats):
        for kind, (model, method, opt) in setups.items():
            times[kind].append(step_time(model, method, x, y, opt, steps))
    trades, scarl = statistics.median(times["trades"]), statistics.median(times["scarl"])
    print(f"{name}: batch {len(y)}, KL-PGD-{attack_steps}: trades {1e3 * trades:.1f} ms/step, scarl {1e3 * scarl:.1f} ms/step, "
          f"ratio scarl/trades = {scarl / trades:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cifar-width", type=int, default=16, help="PreAct-ResNet-18 width for the 32×32 case (64 = the paper's)")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        words = f"{tmp}/words.npy"
        np.save(words, np.random.default_rng(0).normal(size=(10, 50)).astype(np.float32))  # GloVe-6B-50d-shaped
        ds = data.load("digits")
        x, y = ds.train.x[:64], ds.train.y[:64]
        compare("digits / small_cnn", lambda: models.for_dataset("small_cnn", ds), x, y, ds.class_names, "linf:0.2", 10,
                args.repeats, 5, f"file:{words}")
        g = torch.Generator().manual_seed(0)
        x32, y32 = torch.rand(32, 3, 32, 32, generator=g), torch.arange(32) % 10
        compare(f"32×32 / preact_resnet18 (width {args.cifar_width})",
                lambda: models.create("preact_resnet18", 10, 3, 32, width=args.cifar_width), x32, y32,
                [str(i) for i in range(10)], "linf:8/255", 10, args.repeats, 1, f"file:{words}")


if __name__ == "__main__":
    main()
