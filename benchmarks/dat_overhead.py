"""Cost of a DAT training step relative to a standard step, and the share of the two VQ passes.

DAT per step (Mao et al. 2022; easyrobust dat/main.py): clean forward/backward, Q(x), one attack
forward/backward, Q(x'), adversarial forward/backward — i.e. 2 VQ passes + 1 extra forward/backward
+ 1 extra forward/backward of the loss. Timings are interleaved (standard, dat, VQ passes in turn) so
that load from other processes hits all three alike; the medians' ratios are printed.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/dat_overhead.py [--setting digits|cifar] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab import methods, models
from robustlab.methods import StepContext
from robustlab.vq import VQModel, VQTrainConfig
from robustlab.vq.model import VQArch

SETTINGS = {
    # the default digits study: small_cnn, the default digits VQ (f2, 128 codes), batch 64
    "digits": dict(model="small_cnn", kw={}, channels=1, size=8, batch=64, vq=VQTrainConfig().arch(1, 8)),
    # a CIFAR-sized stand-in: resnet20 and an f4 VQ with 512 codes, batch 128
    "cifar": dict(model="resnet20", kw={}, channels=3, size=32, batch=128,
                  vq=VQArch(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), z_channels=32, resolution=32,
                            in_channels=3, out_ch=3, n_embed=512, embed_dim=8, num_groups=8)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="digits")
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    s = SETTINGS[args.setting]
    torch.manual_seed(0)
    model = models.create(s["model"], 10, s["channels"], s["size"], **s["kw"]).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    standard = methods.create("standard")
    dat = methods.create("dat")
    vq = VQModel(s["vq"])
    dat.use_discretiser(vq)
    x = torch.rand(s["batch"], s["channels"], s["size"], s["size"])
    y = torch.randint(0, 10, (s["batch"],))
    ctx = StepContext(generator=torch.Generator().manual_seed(0))

    def step(method) -> None:
        loss, _ = method.loss(model, x, y, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def vq_passes() -> None:
        with torch.no_grad():
            vq.reconstruct(vq.reconstruct(x))

    runs = {"standard step": lambda: step(standard), "dat step": lambda: step(dat), "2 VQ passes": vq_passes}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(args.steps + 3):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            if i >= 3:  # warm-up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"setting {args.setting}: {s['model']} on {s['channels']}×{s['size']}×{s['size']}, batch {s['batch']}, "
          f"VQ f{s['vq'].factor} with {s['vq'].n_embed} codes; {torch.get_num_threads()} thread(s), median of {args.steps} steps")
    for k, v in med.items():
        print(f"  {k:<14} {1000 * v:8.2f} ms")
    print(f"  dat / standard step: {med['dat step'] / med['standard step']:.2f}×")
    print(f"  VQ passes' share of the dat step: {100 * med['2 VQ passes'] / med['dat step']:.0f} %")


if __name__ == "__main__":
    main()
