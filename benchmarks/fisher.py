"""Exact input-Fisher spectral + Frobenius norms (K×K route) against one forward+backward and against
building the explicit n×n Fisher matrices.

Setting of issue 5: a batch of 256 CIFAR-sized (3×32×32) inputs, K = 10, ResNet-20 (eval mode).
Prints wall-time ratios; the timings of one repeat are taken back to back and the ratio is the median
over repeats (robust to a shared, busy machine):
  exact / fwd+bwd           goal ≤ K + 2 (the K×K route costs one forward and K backward passes)
  explicit / exact          the same batched Jacobian, then per sample F = J_lᵀ diag(p) J_l (3072×3072) and
                            its Frobenius norm (what the paper plots), and additionally its spectral norm
                            (eigvalsh). The per-sample matrix work is timed on `--explicit-samples` samples
                            and extrapolated linearly to the batch (say so when quoting it).

    OMP_NUM_THREADS=1 python benchmarks/fisher.py [--batch 256] [--explicit-samples 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from robustlab import models
from robustlab.attacks.fisher import input_fisher, logit_jacobian


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--explicit-samples", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
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

    logits, jac = logit_jacobian(model, x[: args.explicit_samples])
    p = F.softmax(logits.double(), 1).float()
    jl = jac - torch.einsum("nk,nkd->nd", p, jac)[:, None, :]  # log-softmax Jacobian (I − 1pᵀ)J
    mats: list[torch.Tensor] = []

    def build_frobenius() -> None:  # the n×n matrices and their Frobenius norms
        mats.clear()
        for i in range(jl.shape[0]):
            mats.append(jl[i].T @ (p[i, :, None] * jl[i]))  # 3072×3072
            torch.linalg.matrix_norm(mats[-1])

    def spectral() -> None:
        for m in mats:
            torch.linalg.eigvalsh(m)[-1]

    for fn in (fwd_bwd_params, fwd_bwd_input, exact, build_frobenius):
        fn()  # warm-up
    per_sample = args.batch / args.explicit_samples
    t_eig = per_sample * seconds(spectral)  # seconds per eigen-problem barely vary; timed once
    rows = []
    for _ in range(args.repeats):
        t = {"params": seconds(fwd_bwd_params), "input": seconds(fwd_bwd_input), "exact": seconds(exact),
             "jacobian": seconds(lambda: logit_jacobian(model, x))}
        t["explicit_fro"] = t["jacobian"] + per_sample * seconds(build_frobenius)
        t["explicit"] = t["explicit_fro"] + t_eig
        rows.append(t)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratio = lambda a, b: statistics.median(r[a] / r[b] for r in rows)  # noqa: E731
    n = x[0].numel()
    print(f"ResNet-20, batch {args.batch} of 3×32×32 (n = {n}), K = 10, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats} repeats")
    print(f"  forward+backward (parameter gradients):  {med['params']:8.3f} s")
    print(f"  forward+backward (input gradient):       {med['input']:8.3f} s")
    print(f"  exact spectral + Frobenius norms (K×K):  {med['exact']:8.3f} s")
    print(f"  explicit {n}×{n} matrices + Frobenius: {med['explicit_fro']:8.3f} s  (Jacobian of the batch + matrices "
          f"timed on {args.explicit_samples} samples, extrapolated ×{per_sample:g})")
    print(f"  explicit matrices + Frobenius + spectral: {med['explicit']:6.1f} s  (eigvalsh timed once, same extrapolation)")
    print(f"ratio exact / forward+backward (params):  {ratio('exact', 'params'):6.2f}   (goal ≤ K + 2 = 12)")
    print(f"ratio exact / forward+backward (input):   {ratio('exact', 'input'):6.2f}")
    print(f"ratio explicit (Frobenius only) / exact:  {ratio('explicit_fro', 'exact'):6.2f}")
    print(f"ratio explicit (+ spectral) / exact:      {ratio('explicit', 'exact'):6.1f}")


if __name__ == "__main__":
    main()
