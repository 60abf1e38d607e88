"""AutoAttack: robustlab against two independent implementations (torchattacks and the
adversarial-robustness-toolbox, ART), same model, same points, same threat model, one process.

torchattacks' `AutoAttack` runs APGD, APGD-T and FAB with 10 iterations (its constructors' default), not
the 100 of the AutoAttack paper, and rescales Square's schedule. So two torchattacks runs are timed:

- "torchattacks, paper budget": its APGD, APGD-T (9 targets), FAB-T (9 targets) with 100 iterations and
  Square with 5000 queries and the unscaled schedule, cascaded by its MultiAttack — the same work as
  our `standard`: the speed ratio is taken against this one;
- "torchattacks.AutoAttack as shipped" (10 iterations): a weaker, cheaper reference.

ART has APGD-CE and Square but neither FAB nor the targeted DLR loss of APGD-T, so against ART:

- "same components": APGD-CE (100 iterations) → Square (5000 queries) cascaded by ART's AutoAttack, against
  our `custom` AutoAttack of the same two attacks: the speed ratio is taken against this one;
- "ART AutoAttack as shipped" (APGD-CE and APGD-DLR with 5 random starts each, DeepFool, Square with
  5 restarts; initial APGD step 2ε as in the paper): a different, larger cascade, an accuracy cross-check
  of our `standard`.

Prints the robust accuracies (the cross-check: ours should agree within 0.5 points or be lower), the
per-sample disagreement, and the wall-time ratios ours / theirs.

    python benchmarks/autoattack_speed.py                      # the digits study's pgd_at run (trained if missing)
    python benchmarks/autoattack_speed.py --run runs/digits/trades --n 450 --threat l2:1.0

The peers are optional, never dependencies of robustlab; install them without their dependencies
(torchattacks declares torchvision, which it does not import):
    pip install --no-deps torchattacks adversarial-robustness-toolbox six tqdm multiprocess dill
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import art_classifier, study_run  # noqa: E402

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

    compare_torchattacks(model, threat, x, y, ds.num_classes, robust_ours, t_ours)
    compare_art(model, threat, x, y, ds.num_classes, robust_ours, t_ours)


def report(peer: str, model, threat: ThreatModel, x, y, x_adv, seconds: float, robust_ours, t_ours: float) -> None:
    """Print the peer's robust accuracy, the per-sample disagreement with ours and the time ratio ours / peer."""
    x_adv = torch.as_tensor(x_adv)
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    assert threat.contains(x_adv - x, atol=1e-5).all(), f"{peer} left the threat ball"
    acc, acc_ours = 100 * robust.float().mean().item(), 100 * robust_ours.float().mean().item()
    diff = acc_ours - acc
    verdict = "ok: lower or within 0.5 points" if diff <= 0.5 else "NOT ok: robustlab is more than 0.5 points higher"
    print(f"{peer}: robust accuracy {acc:6.2f}%   {seconds:7.1f} s\n"
          f"  robustlab − peer: {diff:+.2f} points ({verdict}); points only robustlab breaks "
          f"{int((~robust_ours & robust).sum())}, only the peer breaks {int((robust_ours & ~robust).sum())}\n"
          f"  wall time ratio robustlab / peer: {t_ours / seconds:.2f}")


def timed_call(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compare_torchattacks(model, threat: ThreatModel, x, y, k: int, robust_ours, t_ours: float) -> None:
    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed: no cross-check against it. "
              "Install it with `pip install --no-deps torchattacks` (benchmark only, not a robustlab dependency).")
        return
    norm = "Linf" if threat.norm == "linf" else "L2"
    paper_budget = torchattacks.MultiAttack([
        torchattacks.APGD(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, loss="ce", seed=0),
        torchattacks.APGDT(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, n_classes=k, seed=0),
        torchattacks.FAB(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=k, seed=0),
        torchattacks.Square(model, norm=norm, eps=threat.eps, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, seed=0),
    ])
    shipped = torchattacks.AutoAttack(model, norm=norm, eps=threat.eps, version="standard", n_classes=k, seed=0)
    print(f"\ntorchattacks {torchattacks.__version__}")
    for name, attack in (("paper budget", paper_budget), ("AutoAttack as shipped", shipped)):
        x_adv, seconds = timed_call(lambda attack=attack: attack(x, y))
        report(f"torchattacks, {name}", model, threat, x, y, x_adv, seconds, robust_ours, t_ours)


def compare_art(model, threat: ThreatModel, x, y, k: int, robust_ours, t_ours: float) -> None:
    """ART has APGD-CE and Square as AutoAttack defines them, but no FAB and no targeted-DLR APGD-T (its
    targeted APGD flips the untargeted DLR loss). So: the same two components cascaded by both libraries
    (the time ratio), and ART's AutoAttack with its own default components (an accuracy cross-check)."""
    try:
        import art
        from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
    except ImportError:
        print("adversarial-robustness-toolbox is not installed: no cross-check against it. Install it with "
              "`pip install --no-deps adversarial-robustness-toolbox six tqdm multiprocess dill` (benchmark only).")
        return
    clf = art_classifier(model, k, tuple(x.shape[1:]))
    norm = np.inf if threat.norm == "linf" else 2
    xs, ys = x.numpy(), y.numpy()
    print(f"\nadversarial-robustness-toolbox {art.__version__}")
    ours = attacks.build({"name": "autoattack", "version": "custom", "attacks": ["apgd-ce", "square"]}, threat,
                         num_classes=k, seed=0)
    res, t_pair = timed_call(lambda: ours.run(model, x, y))
    print(f"robustlab, APGD-CE → Square: robust accuracy {100 * (~res.success).float().mean():6.2f}%   {t_pair:7.1f} s")
    pair = AutoAttack(clf, norm=norm, eps=threat.eps, batch_size=len(ys), attacks=[
        AutoProjectedGradientDescent(clf, norm=norm, eps=threat.eps, eps_step=2 * threat.eps, max_iter=100, nb_random_init=1,
                                     batch_size=len(ys), loss_type="cross_entropy", verbose=False),
        SquareAttack(clf, norm=norm, eps=threat.eps, max_iter=5000, p_init=0.8, nb_restarts=1, batch_size=len(ys),
                     verbose=False),
    ])
    x_adv, seconds = timed_call(lambda: pair.generate(xs, ys))
    report("ART, APGD-CE → Square (same components)", model, threat, x, y, x_adv, seconds, ~res.success, t_pair)
    shipped = AutoAttack(clf, norm=norm, eps=threat.eps, eps_step=2 * threat.eps, batch_size=len(ys))
    print("ART AutoAttack as shipped: running (its default components draw progress bars; silenced) ...", flush=True)
    with contextlib.redirect_stderr(io.StringIO()):
        x_adv, seconds = timed_call(lambda: shipped.generate(xs, ys))
    report("ART AutoAttack as shipped (APGD-CE, APGD-DLR with 5 inits each, DeepFool, Square with 5 restarts; "
           "compared with our standard)", model, threat, x, y, x_adv, seconds, robust_ours, t_ours)

if __name__ == "__main__":
    main()
