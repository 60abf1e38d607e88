"""AutoAttack `standard`: robustlab against an independent implementation (torchattacks), same model,
same points, same threat model, one process.

torchattacks' `AutoAttack` runs APGD, APGD-T and FAB with 10 iterations (its constructors' default), not
the 100 of the AutoAttack paper, and rescales Square's schedule. So two peer runs are timed:

- "torchattacks, paper budget": its APGD, APGD-T (9 targets), FAB-T (9 targets) with 100 iterations and
  Square with 5000 queries and the unscaled schedule, cascaded by its MultiAttack — the same work as
  ours: the speed ratio is taken against this one;
- "torchattacks.AutoAttack as shipped" (10 iterations): a weaker, cheaper reference.

Prints the robust accuracies (the cross-check: ours should agree within 0.5 points or be lower), the
per-sample disagreement, and the wall-time ratios ours / theirs.

    python benchmarks/autoattack_speed.py                      # the digits study's pgd_at run (trained if missing)
    python benchmarks/autoattack_speed.py --run runs/digits/trades --n 450 --threat l2:1.0

torchattacks is an optional peer, never a dependency of robustlab; install it without its
dependencies (it declares torchvision, which it does not import):
    pip install --no-deps torchattacks
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import study_run  # noqa: E402

from robustlab import attacks, data
from robustlab.checkpoint import load_model
from robustlab.threat import ThreatModel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory (default: the digits study's pgd_at run)")
    p.add_argument("--n", type=int, default=200, help="test points (default 200)")
    p.add_argument("--threat", help="threat model (default: the run's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    run_dir = Path(args.run) if args.run else study_run("pgd_at")
    model, meta = load_model(run_dir, "cpu")
    ds = data.load(meta["dataset"]["name"], **meta["dataset"].get("options", {}))
    threat = ThreatModel.parse(args.threat or meta["threat"])
    split = ds.test.head(args.n)
    x, y = split.x, split.y
    print(f"model {run_dir} ({meta['arch']}), {threat}, n = {len(y)} test points, {args.threads} torch thread(s)")

    ours = attacks.build("autoattack", threat, num_classes=ds.num_classes, seed=0)
    t0 = time.perf_counter()
    res = ours.run(model, x, y)
    t_ours = time.perf_counter() - t0
    robust_ours = ~res.success
    stages = " → ".join(f"{k} {100 * v.float().mean():.1f}%" for k, v in res.stages.items())
    print(f"robustlab    robust accuracy {100 * robust_ours.float().mean():6.2f}%   {t_ours:7.1f} s   ({stages})")

    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed: no cross-check and no speed ratio. "
              "Install it with `pip install --no-deps torchattacks` (benchmark only, not a robustlab dependency).")
        return
    norm = "Linf" if threat.norm == "linf" else "L2"
    k = ds.num_classes
    paper_budget = torchattacks.MultiAttack([
        torchattacks.APGD(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, loss="ce", seed=0),
        torchattacks.APGDT(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, n_classes=k, seed=0),
        torchattacks.FAB(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=k, seed=0),
        torchattacks.Square(model, norm=norm, eps=threat.eps, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, seed=0),
    ])
    shipped = torchattacks.AutoAttack(model, norm=norm, eps=threat.eps, version="standard", n_classes=k, seed=0)
    print(f"torchattacks {torchattacks.__version__}")
    acc_ours = 100 * robust_ours.float().mean().item()
    for name, attack in (("paper budget", paper_budget), ("AutoAttack as shipped", shipped)):
        t0 = time.perf_counter()
        x_adv = attack(x, y)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            robust = model(x_adv).argmax(1) == y
        assert threat.contains(x_adv - x, atol=1e-5).all(), f"torchattacks ({name}) left the threat ball"
        acc = 100 * robust.float().mean().item()
        diff = acc_ours - acc
        verdict = "ok: lower or within 0.5 points" if diff <= 0.5 else "NOT ok: robustlab is more than 0.5 points higher"
        print(f"torchattacks, {name}: robust accuracy {acc:6.2f}%   {seconds:7.1f} s\n"
              f"  robustlab − torchattacks: {diff:+.2f} points ({verdict}); points only robustlab breaks "
              f"{int((~robust_ours & robust).sum())}, only torchattacks breaks {int((robust_ours & ~robust).sum())}\n"
              f"  wall time ratio robustlab / torchattacks: {t_ours / seconds:.2f}")


if __name__ == "__main__":
    main()
