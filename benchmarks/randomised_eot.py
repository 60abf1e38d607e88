"""Randomised models: what EOT and AutoAttack `rand` change, and how judged passes decide noisy predictions.

A small CNN trained on digits with Gaussian input noise (σ 0.15, 15 epochs of Adam), then randomised two ways:

1. random-phase high-frequency input noise, x + (a/w)·sin(w·x + u) with a = 3, w = 1000, u uniform per pixel
   and pass (tests/test_own_model.py::RandomPhase): predictions barely move, one pass's gradient is noise.
   AutoAttack standard vs rand on the same points (one clean pass), and the model without the noise.
2. Gaussian input noise (σ 0.1, 0.2): APGD-CE with 100 and 2000 steps, with and without EOT; AutoAttack standard
   vs rand. A point counts broken once a judged pass misclassifies it, so more passes break more points.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/randomised_eot.py
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robustlab import data, models
from robustlab.evaluate import evaluate


class RandomPhase(nn.Module):
    def __init__(self, inner: nn.Module, a: float = 3.0, w: float = 1000.0):
        super().__init__()
        self.inner, self.a, self.w = inner, a, w

    def forward(self, x):
        return self.inner(x + self.a / self.w * torch.sin(self.w * x + 2 * math.pi * torch.rand_like(x)))


class Gaussian(nn.Module):
    def __init__(self, inner: nn.Module, sigma: float):
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        return self.inner(x + self.sigma * torch.randn_like(x))


def trained_cnn(ds) -> nn.Module:
    torch.manual_seed(0)
    model = models.create("small_cnn", 10, 1, 8, width=8, hidden=32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(15):
        perm = torch.randperm(len(ds.train))
        for i in range(0, len(perm), 64):
            x, y = ds.train.x[perm[i : i + 64]], ds.train.y[perm[i : i + 64]]
            loss = nn.functional.cross_entropy(model((x + 0.15 * torch.randn_like(x)).clamp(0, 1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def show(title: str, model: nn.Module, split, threat: str, suite: list) -> None:
    torch.manual_seed(0)
    r = evaluate(model, split, threat, suite, num_classes=10, quiet=True)
    row = ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.row().items())
    stages = "; ".join(f"{k}: " + " → ".join(f"{c} {100 * v:.1f}%" for c, v in s.items()) for k, s in r.stages.items())
    print(f"{title} ({threat}, {len(split)} points): {row}" + (f"\n    {stages}" if stages else ""), flush=True)


def main() -> None:
    torch.set_num_threads(1)
    ds = data.load("digits")
    cnn = trained_cnn(ds)
    aa = ["autoattack", {"name": "autoattack", "version": "rand"}]
    show("random phase", RandomPhase(cnn), ds.test.head(40), "linf:0.1", aa)
    show("no noise", cnn, ds.test.head(40), "linf:0.1", ["autoattack"])
    apgd = [{"name": "apgd-ce"}, {"name": "apgd-ce", "eot_iter": 20}, {"name": "apgd-ce", "steps": 2000}]
    show("Gaussian σ 0.1", Gaussian(cnn, 0.1), ds.test.head(200), "linf:0.05", apgd)
    show("no noise", cnn, ds.test.head(200), "linf:0.05", ["apgd-ce"])
    show("Gaussian σ 0.2", Gaussian(cnn, 0.2), ds.test.head(100), "linf:0.05", aa)


if __name__ == "__main__":
    main()
