"""AutoAttack: robustlab against the reference implementation (Croce & Hein's fra31/auto-attack, on PyPI as
`pyautoattack`) and two independent ones (torchattacks, the adversarial-robustness-toolbox ART): the same
model, points and threat model, in one process.

1. **Reference**: our `standard` and the reference's `standard` (APGD-CE → APGD-T → FAB-T → Square, 100
   iterations, 9 targets, 5000 queries), called in turn `--repeats` times (the order rotating) at each
   thread count of `--threads`: median wall and CPU seconds, their ratio ours / reference, both robust
   accuracies, and the points broken by one and not the other. A point robust under ours but broken by the
   reference means ours is weaker there: the count must be 0. Our `fast` suite (APGD-CE and APGD-T on MALT's
   first 3 targets) is timed in the same rounds, against our `standard` (points `standard` breaks and `fast`
   misses, the time ratio). Ours run through `evaluate` (the clean pass included, as in the reference).
   On a CPU our attacks run the model's convolution weights in channels_last (robustlab.models.layout);
   `--layouts` adds ours with that switch off and the reference given a channels_last copy of the model,
   so the ratio can be split into what the layout and what the attack code contribute.
2. **torchattacks** (once, at the first thread count): its `AutoAttack` runs APGD, APGD-T and FAB with 10
   iterations (its constructors' default), so two runs: its components at the paper budget (100 iterations,
   9 targets, Square 5000 queries, unscaled schedule) cascaded by its MultiAttack — the same work as our
   `standard` — and `torchattacks.AutoAttack` as shipped (weaker, cheaper).
3. **ART** (once): it has APGD-CE and Square but neither FAB nor the targeted DLR loss of APGD-T, so: the same
   two components cascaded by both libraries (ours: `custom` with apgd-ce, square), and ART's `AutoAttack` as
   shipped (APGD-CE and APGD-DLR with 5 random starts each, DeepFool, Square with 5 restarts) against our
   `standard`, an accuracy cross-check.

    python benchmarks/autoattack_speed.py                      # the digits study's pgd_at run (trained if missing)
    python benchmarks/autoattack_speed.py --run runs/digits/trades --n 450 --threads 1 --repeats 3 --peers none

The peers are optional, never dependencies of robustlab; a missing one is skipped with a line that says how to
install it. Install them without their dependencies (torchattacks declares torchvision, which it does not import):
    pip install --no-deps pyautoattack torchattacks adversarial-robustness-toolbox six
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import art_classifier, interleaved, machine, study_run  # noqa: E402

from robustlab import attacks, data  # noqa: E402
from robustlab.checkpoint import load_model  # noqa: E402
from robustlab.evaluate import evaluate  # noqa: E402
from robustlab.threat import ThreatModel  # noqa: E402

INSTALL = "`pip install --no-deps {}` (benchmark only, not a robustlab dependency)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory (default: the digits study's pgd_at run)")
    p.add_argument("--n", type=int, default=200, help="test points (default 200)")
    p.add_argument("--threat", help="threat model (default: the run's)")
    p.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated (default 1,2)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of the interleaved timings (default 2)")
    p.add_argument("--layouts", action="store_true", help="also time ours with the channels_last switch off "
                   "(ROBUSTLAB_CHANNELS_LAST=0) and the reference on a channels_last copy of the model: what the "
                   "memory layout contributes to the ratio")
    p.add_argument("--peers", default="torchattacks,art", help="independent peers to run once: torchattacks, art, "
                   "or none (default torchattacks,art)")
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(threads[0])

    run_dir = Path(args.run) if args.run else study_run("pgd_at")
    model, meta = load_model(run_dir, "cpu")
    model.eval()
    ds = data.load(meta["dataset"]["name"], **meta["dataset"].get("options", {}))
    threat = ThreatModel.parse(args.threat or meta["threat"])
    split = ds.test.head(args.n)
    x, y = split.x, split.y
    k = ds.num_classes
    print(f"model {run_dir} ({meta['arch']}), {threat}, n = {len(y)} test points; {machine()}")


    def suite(name: str):
        return lambda: torch.from_numpy(evaluate(model, split, threat, name, batch_size=len(y), quiet=True).robust())

    fns = {"ours": suite("autoattack"), "fast": suite("fast")}
    reference = reference_attack(model, threat, len(y))
    if reference is not None:
        fns["reference"] = lambda: robust_at(model, threat, x, y, reference(x, y), "the reference")
    if args.layouts:
        fns["ours, channels-first"] = lambda: channels_first(fns["ours"])
        if reference is not None:
            model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            reference_cl = reference_attack(model_cl, threat, len(y))
            fns["reference, channels_last"] = lambda: robust_at(model, threat, x, y, reference_cl(x, y), "the reference")
    first: dict = {}
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        print(f"\n{n_threads} torch thread(s), {args.repeats} interleaved round(s); median seconds (wall / CPU)")
        timings = interleaved(fns, args.repeats)
        first = first or timings
        (t_ours, c_ours, robust_ours), (t_fast, c_fast, robust_fast) = timings["ours"], timings["fast"]
        print(f"  robustlab standard   robust accuracy {pct(robust_ours)}   {t_ours:7.1f} s / {c_ours:7.1f} s")
        if "reference" in timings:
            t_ref, c_ref, robust_ref = timings["reference"]
            print(f"  reference standard   robust accuracy {pct(robust_ref)}   {t_ref:7.1f} s / {c_ref:7.1f} s\n"
                  f"    time ours / reference: {t_ours / t_ref:.2f} wall, {c_ours / c_ref:.2f} CPU\n"
                  f"    points robust under ours but broken by the reference: {int((robust_ours & ~robust_ref).sum())}"
                  f" (must be 0); broken by ours only: {int((~robust_ours & robust_ref).sum())}")
        for name in ("ours, channels-first", "reference, channels_last"):
            if name in timings:
                t, c, robust = timings[name]
                print(f"  {name:<26} robust accuracy {pct(robust)}   {t:7.1f} s / {c:7.1f} s; CPU time of our "
                      f"standard / this: {c_ours / c:.2f}")
        print(f"  robustlab fast       robust accuracy {pct(robust_fast)}   {t_fast:7.1f} s / {c_fast:7.1f} s\n"
              f"    time fast / standard: {t_fast / t_ours:.2f} wall, {c_fast / c_ours:.2f} CPU; robust accuracy "
              f"{100 * (robust_fast.float().mean() - robust_ours.float().mean()):+.2f} points; points standard breaks "
              f"and fast misses: {int((robust_fast & ~robust_ours).sum())}, the reverse: "
              f"{int((~robust_fast & robust_ours).sum())}")
    torch.set_num_threads(threads[0])
    peers = set(args.peers.split(",")) - {"none"}
    t_ours, _, robust_ours = first["ours"]
    if "torchattacks" in peers:
        compare_torchattacks(model, threat, x, y, k, robust_ours, t_ours)
    if "art" in peers:
        compare_art(model, threat, x, y, k, robust_ours, t_ours)


def channels_first(fn):
    """fn() with robustlab's channels_last switch for attacks off."""
    os.environ["ROBUSTLAB_CHANNELS_LAST"] = "0"
    try:
        return fn()
    finally:
        del os.environ["ROBUSTLAB_CHANNELS_LAST"]


def pct(robust: torch.Tensor) -> str:
    return f"{100 * robust.float().mean().item():6.2f}%"


def robust_at(model, threat: ThreatModel, x, y, x_adv, who: str) -> torch.Tensor:
    """Per point: still classified correctly at the peer's x_adv (which must lie in the ball and the box)."""
    x_adv = torch.as_tensor(x_adv)
    assert threat.contains(x_adv - x, atol=1e-5).all(), f"{who} left the threat ball"
    assert x_adv.min() >= 0 and x_adv.max() <= 1, f"{who} left [0, 1]"
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def reference_attack(model, threat: ThreatModel, n: int):
    """The reference's `standard` as a function (x, y) -> x_adv, or None (with a line) when it is not installed."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        print("pyautoattack (the reference implementation, fra31/auto-attack) is not installed: its rows are "
              f"skipped. Install it with {INSTALL.format('pyautoattack')}.")
        return None
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    norm = "Linf" if threat.norm == "linf" else "L2"
    reference = AutoAttack(model, norm=norm, eps=threat.eps, version="standard", seed=0, device="cpu")
    return lambda x, y: reference.run_standard_evaluation(x, y, batch_size=n)[0]


def report(peer: str, model, threat: ThreatModel, x, y, x_adv, seconds: float, robust_ours, t_ours: float) -> None:
    """Print the peer's robust accuracy, the per-sample disagreement with ours and the time ratio ours / peer."""
    robust = robust_at(model, threat, x, y, x_adv, peer)
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
        print(f"\ntorchattacks is not installed: its rows are skipped. Install it with {INSTALL.format('torchattacks')}.")
        return
    norm = "Linf" if threat.norm == "linf" else "L2"
    paper_budget = torchattacks.MultiAttack([
        torchattacks.APGD(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, loss="ce", seed=0),
        torchattacks.APGDT(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, n_classes=k, seed=0),
        torchattacks.FAB(model, norm=norm, eps=threat.eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=k, seed=0),
        torchattacks.Square(model, norm=norm, eps=threat.eps, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, seed=0),
    ])
    shipped = torchattacks.AutoAttack(model, norm=norm, eps=threat.eps, version="standard", n_classes=k, seed=0)
    print(f"\ntorchattacks {torchattacks.__version__} (one run each, against our standard)")
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
        print("\nadversarial-robustness-toolbox is not installed: its rows are skipped. Install it with "
              f"{INSTALL.format('adversarial-robustness-toolbox six')}.")
        return
    clf = art_classifier(model, k, tuple(x.shape[1:]))
    norm = np.inf if threat.norm == "linf" else 2
    xs, ys = x.numpy(), y.numpy()
    print(f"\nadversarial-robustness-toolbox {art.__version__} (one run each)")
    ours = attacks.build({"name": "autoattack", "version": "custom", "attacks": ["apgd-ce", "square"]}, threat,
                         num_classes=k, seed=0)
    res, t_pair = timed_call(lambda: ours.run(model, x, y))
    print(f"robustlab, APGD-CE → Square: robust accuracy {pct(~res.success)}   {t_pair:7.1f} s")
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
