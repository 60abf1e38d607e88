"""Our PGD-k and APGD-CE against torchattacks and the adversarial-robustness-toolbox (ART), on the same
model, points and threat model, in one process: wall-time ratios ours / theirs and robust accuracies.
AutoAttack itself is compared in benchmarks/autoattack_speed.py.

    python benchmarks/peers.py                       # the digits study's pgd_at run (trained if missing)
    python benchmarks/peers.py --run RUN --n 450 --threads 2

The peers are optional and never robustlab dependencies; install them without their dependencies:
    pip install --no-deps torchattacks adversarial-robustness-toolbox six tqdm multiprocess dill

Like-for-like settings: one random start, the same step, CE loss. Ours is timed twice: the last iterate
(as the peers return it) and our evaluation default, which keeps each point's best iterate (one extra
forward pass; never weaker). Robust accuracy counts a point robust if the model is still right on the
returned example (clean-wrong points count as broken).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import art_classifier, machine, study_run  # noqa: E402

from robustlab import attacks, data  # noqa: E402
from robustlab.checkpoint import load_model  # noqa: E402
from robustlab.threat import ThreatModel  # noqa: E402


def robust_accuracy(model, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def timed_attack(fn, model, y, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of `repeats` calls, and the robust accuracy of the last one."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x_adv = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), robust_accuracy(model, torch.as_tensor(x_adv), y)


def peers(model, threat: ThreatModel, k: int, step: float, n: int, num_classes: int, input_shape):
    """{name: attack function x, y -> x_adv} of the installed peers for PGD-k and APGD-CE."""
    out: dict[str, dict] = {}
    try:
        import torchattacks as ta

        ta_norm = "Linf" if threat.norm == "linf" else "L2"
        pgd = ta.PGD(model, eps=threat.eps, alpha=step, steps=k, random_start=True) if threat.norm == "linf" else \
            ta.PGDL2(model, eps=threat.eps, alpha=step, steps=k, random_start=True)
        out["torchattacks"] = {"pgd": lambda x, y: pgd(x, y),
                               "apgd-ce": lambda x, y: ta.APGD(model, norm=ta_norm, eps=threat.eps, steps=100, n_restarts=1, loss="ce")(x, y)}
    except ImportError:
        print("torchattacks is not installed: skipped (pip install --no-deps torchattacks)")
    try:
        from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescentPyTorch

        clf = art_classifier(model, num_classes, input_shape)
        art_norm = np.inf if threat.norm == "linf" else 2
        art_pgd = ProjectedGradientDescentPyTorch(clf, norm=art_norm, eps=threat.eps, eps_step=step, max_iter=k, num_random_init=1,
                                                  batch_size=n, verbose=False)
        art_apgd = AutoProjectedGradientDescent(clf, norm=art_norm, eps=threat.eps, eps_step=2 * threat.eps, max_iter=100,
                                                nb_random_init=1, batch_size=n, loss_type="cross_entropy", verbose=False)
        out["ART"] = {"pgd": lambda x, y: torch.from_numpy(art_pgd.generate(x.numpy(), y.numpy())),
                      "apgd-ce": lambda x, y: torch.from_numpy(art_apgd.generate(x.numpy(), y.numpy()))}
    except ImportError:
        print("adversarial-robustness-toolbox is not installed: skipped (pip install --no-deps adversarial-robustness-toolbox six tqdm multiprocess dill)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory (default: the digits study's pgd_at run)")
    p.add_argument("--n", type=int, default=200, help="test points (default 200)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 40], help="PGD steps to compare (default 10 40)")
    p.add_argument("--threat", help="threat model (default: the run's)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run) if args.run else study_run("pgd_at")
    model, meta = load_model(run_dir, "cpu")
    ds = data.load(meta["dataset"]["name"], **meta["dataset"].get("options", {}))
    x, y = ds.test.x[: args.n], ds.test.y[: args.n]
    threat = ThreatModel.parse(args.threat or meta["threat"])
    step = threat.eps / 4
    print(f"{run_dir}: {meta['arch']}, {threat}, n = {len(y)}, step {step:.4g}; {machine()}")
    print(f"clean accuracy {robust_accuracy(model, x, y):.4f}")
    rows = []
    for k in args.steps:
        others = peers(model, threat, k, step, len(y), ds.num_classes, tuple(x.shape[1:]))
        last = attacks.build({"name": "pgd", "steps": k, "keep_best": False}, threat, defaults={"step": step})
        best = attacks.build({"name": "pgd", "steps": k}, threat, defaults={"step": step})
        ours_t, ours_acc = timed_attack(lambda: last(model, x, y), model, y)
        best_t, best_acc = timed_attack(lambda: best(model, x, y), model, y)
        rows.append((f"pgd-{k}", "robustlab (last iterate)", ours_t, ours_acc, 1.0))
        rows.append((f"pgd-{k}", "robustlab (keep best)", best_t, best_acc, best_t / ours_t))
        for name, fns in others.items():
            t, acc = timed_attack(lambda: fns["pgd"](x, y), model, y)
            rows.append((f"pgd-{k}", name, t, acc, ours_t / t))
    others = peers(model, threat, 10, step, len(y), ds.num_classes, tuple(x.shape[1:]))
    apgd = attacks.build("apgd-ce", threat)
    ours_t, ours_acc = timed_attack(lambda: apgd(model, x, y), model, y)
    rows.append(("apgd-ce (100 it.)", "robustlab", ours_t, ours_acc, 1.0))
    for name, fns in others.items():
        t, acc = timed_attack(lambda: fns["apgd-ce"](x, y), model, y)
        rows.append(("apgd-ce (100 it.)", name, t, acc, ours_t / t))
    print(f"\n{'attack':<18} {'implementation':<26} {'seconds':>8} {'robust acc':>10} {'ours/theirs':>12}")
    for attack, impl, t, acc, ratio in rows:
        r = "" if impl.startswith("robustlab") and ratio == 1.0 else f"{ratio:.2f}"
        print(f"{attack:<18} {impl:<26} {t:>8.2f} {acc:>10.4f} {r:>12}")
    print("\nours/theirs < 1: ours is faster. For 'keep best' the ratio is to our last-iterate time (the cost of keeping the best).")


if __name__ == "__main__":
    main()
