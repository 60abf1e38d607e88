"""Attack overhead: our PGD-k vs k × the bare forward+backward on the same batch, and a PGD-AT epoch vs
(k+1) × a standard epoch. Prints ratios (absolute seconds on a shared machine are noise).

    python benchmarks/attack_overhead.py [--k 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import input_grad_step, machine, timed  # noqa: E402

from robustlab import attacks, data, methods, models  # noqa: E402
from robustlab.attacks.base import model_untouched  # noqa: E402
from robustlab.methods import StepContext  # noqa: E402
from robustlab.train import make_optimizer  # noqa: E402
from robustlab.config import TrainConfig  # noqa: E402


def attack_ratio(model, x, y, k: int, threat: str, repeats: int) -> tuple[float, float, float]:
    model.eval()
    pgd = attacks.build({"name": "pgd", "steps": k, "keep_best": False}, threat)
    pgd_eval = attacks.build({"name": "pgd", "steps": k}, threat)

    def bare():
        with model_untouched(model):  # parameters frozen, as in the attack
            for _ in range(k):
                input_grad_step(model, x, y)

    def bare_and_score():  # what any evaluation needs: k steps, then one forward to see which points survived
        bare()
        with torch.no_grad():
            model(x).argmax(1)

    t_bare = timed(bare, repeats)
    t_scored = timed(bare_and_score, repeats)
    t_pgd = timed(lambda: pgd(model, x, y), repeats)
    t_eval = timed(lambda: pgd_eval.run(model, x, y), repeats)
    return t_pgd / t_bare, t_eval / t_scored, t_bare / k


def epoch_ratio(model, split, k: int, threat: str, batch: int, device) -> float:
    cfg = TrainConfig(epochs=1, batch_size=batch)

    def epoch(method):
        opt = make_optimizer(list(model.parameters()), cfg)
        model.train()
        g = torch.Generator(device=device).manual_seed(0)
        for i in range(0, len(split), batch):
            x, y = split.x[i:i + batch], split.y[i:i + batch]
            loss, _ = method.loss(model, x, y, StepContext(generator=g))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    std = methods.create("standard")
    at = methods.create("pgd_at", threat=threat, attack_steps=k)
    t_std = timed(lambda: epoch(std), 3)
    t_at = timed(lambda: epoch(at), 3)
    return t_at / ((k + 1) * t_std)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    print(f"attack overhead, k = {args.k}; {machine()}")
    print(f"{'setting':<44} {'PGD/bare':>9} {'PGD+best/(bare+fwd)':>20} {'bare step':>10}")
    cases = [
        ("small_cnn, digits 1×8×8, batch 256", models.create("small_cnn", 10, 1, 8), (256, 1, 8), "linf:0.2"),
        ("resnet20, 3×32×32, batch 128", models.create("resnet20", 10, 3, 32), (128, 3, 32), "linf:8/255"),
    ]
    for name, model, (n, c, s), threat in cases:
        model = model.to(dev)
        x = torch.rand(n, c, s, s, device=dev)
        y = torch.randint(0, 10, (n,), device=dev)
        r, r_best, step = attack_ratio(model, x, y, args.k, threat, args.repeats)
        print(f"{name:<44} {r:>9.3f} {r_best:>20.3f} {1000 * step:>8.2f}ms")
    ds = data.load("digits")
    split = ds.train.to(dev)
    model = models.for_dataset("small_cnn", ds).to(dev)
    r = epoch_ratio(model, split, args.k, "linf:0.2", 64, dev)
    print(f"PGD-AT epoch / ((k+1) × standard epoch), small_cnn on digits, batch 64: {r:.3f}")
    print("PGD = the training attack (last iterate) against k x (forward + backward to the input), parameters frozen.")
    print("PGD+best = the evaluation attack (keeps each point's best iterate, reports success) against the same k steps")
    print("plus the one forward pass any evaluation needs to score the final points.")


if __name__ == "__main__":
    main()
