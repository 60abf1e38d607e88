"""Exact input-Fisher spectral + Frobenius norms (K×K route) against one forward+backward and against
building the explicit n×n Fisher matrices.

Setting of issue 5: a batch of 256 CIFAR-sized (3×32×32) inputs, K = 10, ResNet-20 (eval mode).
Prints wall-time ratios (median of `--repeats`):
  exact / fwd+bwd           goal ≤ K + 2 (the K×K route costs one forward and K backward passes)
  explicit / exact          building F = J_lᵀ diag(p) J_l (3072×3072) per sample, its Frobenius norm and its
                            spectral norm (eigvalsh); timed on `--explicit-samples` samples and extrapolated
                            linearly to the batch (say so when quoting it).

    OMP_NUM_THREADS=1 python benchmarks/fisher.py [--batch 256] [--explicit-samples 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from robustlab import models
from robustlab.attacks.fisher import input_fisher, logit_jacobian


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--explicit-samples", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = models.create("resnet20", 10, 3, 32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)).eval()
    x = torch.rand(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))

    def fwd_bwd_params() -> None:  # a training step's forward + backward (gradients of all parameters)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def fwd_bwd_input() -> None:  # forward + backward to the input only (one attack step)
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xr), y), xr)

    def exact() -> None:
        fi = input_fisher(model, x, direction=False)
        fi.spectral, fi.frobenius

    xs = x[: args.explicit_samples]

    def explicit() -> None:  # the n×n matrices, one per sample
        logits, jac = logit_jacobian(model, xs)
        p = F.softmax(logits.double(), 1).float()
        jl = jac - torch.einsum("nk,nkd->nd", p, jac)[:, None, :]  # log-softmax Jacobian (I − 1pᵀ)J
        for i in range(xs.shape[0]):
            fm = jl[i].T @ (p[i, :, None] * jl[i])  # 3072×3072
            torch.linalg.matrix_norm(fm)
            torch.linalg.eigvalsh(fm)[-1]

    t_params = timed(fwd_bwd_params, args.repeats)
    t_input = timed(fwd_bwd_input, args.repeats)
    t_exact = timed(exact, args.repeats)
    t_explicit = timed(explicit, 1) * args.batch / args.explicit_samples
    n = x[0].numel()
    print(f"ResNet-20, batch {args.batch} of 3×32×32 (n = {n}), K = 10, {torch.get_num_threads()} thread(s)")
    print(f"  forward+backward (parameter gradients): {t_params:8.3f} s")
    print(f"  forward+backward (input gradient):      {t_input:8.3f} s")
    print(f"  exact spectral + Frobenius norms (K×K): {t_exact:8.3f} s")
    print(f"  explicit {n}×{n} matrices + norms:     {t_explicit:8.1f} s  (timed on {args.explicit_samples} samples, "
          f"extrapolated ×{args.batch / args.explicit_samples:g})")
    print(f"ratio exact / forward+backward (params): {t_exact / t_params:6.2f}   (goal ≤ K + 2 = 12)")
    print(f"ratio exact / forward+backward (input):  {t_exact / t_input:6.2f}")
    print(f"ratio explicit / exact:                  {t_explicit / t_exact:6.0f}")


if __name__ == "__main__":
    main()
