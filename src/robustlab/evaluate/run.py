"""`evaluate`: every attack of a suite on the clean-correct points, in named stages.

check the inputs → build the attacks → the clean pass → (open the resume state) → each attack over its
batches → place the per-sample results → the result → (the sanity flags) → remove the resume state.

A PGD-k whose result is the first k steps of a longer PGD of the suite (`PGD.prefix_of`: PGD-10, -20 and -40
of PGD-100 in the paper protocol, CW-k alike) is not run again: the longer attack reports the points still
robust after k steps, which is PGD-k's per-sample result, bit for bit on a deterministic model
(tests/test_evaluation.py); on a randomised one it is another, equally valid draw of PGD-k's randomness.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress, TaskID
from torch import nn

from .. import seeds
from ..attacks import PGD, Attack, check_logits
from ..attacks import build as build_attack
from ..config import FlagConfig
from ..data import Split, batches, check_images, check_labels
from ..distributed import World
from ..errors import RobustlabError
from ..models import eval_mode
from ..threat import ThreatModel
from ..ui import console, progress_bar
from . import sanity
from .result import EvalResult
from .state import EvalState, fingerprint
from .suites import attack_label, resolve_suite


def evaluate(
    model: nn.Module,
    split: Split,
    threat: ThreatModel | str,
    suite: str | list[str | dict[str, Any]] = "paper",
    *,
    step: float | None = None,
    step_ratio: float = 0.25,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str | None = None,
    quiet: bool = False,
    num_classes: int | None = None,
    flags: FlagConfig | None = None,
    flag_context: Sequence[EvalResult] = (),
    state_path: str | Path | None = None,
    on_batch_done: Callable[[str, int], None] | None = None,
    world: World | None = None,
    precision: str = "fp32",
) -> EvalResult:
    """Evaluate `model` on `split` under every attack of `suite` (see the package doc).

    With a distributed `world` (torchrun), the attack batches are shared round-robin between the ranks
    and the per-sample results gathered: every rank returns the same table as one process would (each
    batch draws from its own seeded generator). The resume state is then not used.

    `num_classes` (default: the model's) is the dataset's class count the logits must have. `flags`
    computes the sanity flags, reusing the per-sample results of `flag_context` (other suites on the
    same points). `state_path` makes the evaluation resumable. `on_batch_done(label, batch)` is
    called after each batch of each attack.
    """
    threat = ThreatModel.parse(threat)
    device = (
        torch.device(device)
        if device is not None
        else next((p.device for p in model.parameters()), torch.device("cpu"))
    )
    num_classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    _check_inputs(split, threat, num_classes, precision, device)
    specs = resolve_suite(suite)
    step = step if step is not None else threat.eps * step_ratio
    attacks = [
        (attack_label(s), build_attack(s, threat, defaults={"step": step}, seed=seed, num_classes=num_classes))
        for s in specs
    ]
    prefixes = _prefixes(attacks)
    world = world or World()
    quiet = quiet or not world.is_main
    data = split.to(device)
    with eval_mode(model):
        t0 = time.perf_counter()
        clean = _clean_correct(model, data, batch_size, num_classes)
        seconds = {"clean": time.perf_counter() - t0}
        correct_idx = torch.nonzero(clean).flatten()
        target = data.subset(correct_idx.to(device))
        n_batches = -(-len(target) // batch_size)
        state = _open_state(
            state_path,
            world,
            quiet,
            n_batches,
            {
                "threat": str(threat),
                "suite": specs,
                "step": step,
                "batch_size": batch_size,
                "seed": seed,
                "model": fingerprint(*model.state_dict().values()),
                "data": fingerprint(split.x, split.y),
            },
        )
        found: dict[str, dict[str, np.ndarray]] = {}
        with progress_bar(disable=quiet) as bar, _autocast(precision, device):
            task = bar.add_task("evaluate", total=(len(attacks) - len(prefixes)) * n_batches, info="")
            for label, attack in attacks:
                if label in prefixes:
                    continue
                found[label], seconds[label] = _run_attack(
                    label,
                    attack,
                    model,
                    target,
                    batch_size,
                    seed,
                    state,
                    partial(_advance, bar, task, label),
                    on_batch_done,
                    world,
                    quiet,
                )
                if not quiet:
                    console.print(
                        f"  {label:<10} {_accuracy(found[label][label], clean):7.2%}  ({seconds[label]:.1f}s)"
                    )
        for label, (longer, k) in prefixes.items():  # PGD-k: the points still robust after k steps of the longer
            found[label] = {label: found[longer].pop(f"{longer}:step{k}")}
            seconds[label] = 0.0
            if not quiet:
                console.print(
                    f"  {label:<10} {_accuracy(found[label][label], clean):7.2%}  (the first {k} steps of {longer})"
                )
        seconds = {"clean": seconds["clean"], **{label: seconds[label] for label, _ in attacks}}
        per_sample: dict[str, np.ndarray] = {"clean": clean.numpy()}
        stages: dict[str, dict[str, float]] = {}
        for label, _ in attacks:  # in the suite's order
            _place(label, found[label], correct_idx.numpy(), len(data), per_sample, stages)
    result = EvalResult(
        threat=str(threat),
        suite=[label for label, _ in attacks],
        n=len(data),
        clean=float(clean.float().mean()),
        attacks={label: float(per_sample[label].mean()) for label, _ in attacks},
        worst_case=0.0,
        step=step,
        seconds=seconds,
        stages=stages,
        per_sample=per_sample,
    )
    result.worst_case = float(result.robust().mean())
    if flags is not None and flags.enabled:
        result.flags = sanity.check(
            model,
            split,
            threat,
            [result, *flag_context],
            flags,
            num_classes=num_classes,
            seed=seed,
            device=device,
            batch_size=batch_size,
        )
    if state is not None:
        state.remove()
    return result


def _advance(bar: Progress, task: TaskID, label: str, batches: int) -> None:
    bar.update(task, advance=batches, info=label)


def _check_inputs(
    split: Split, threat: ThreatModel, num_classes: int | None, precision: str, device: torch.device
) -> None:
    if threat.eps <= 0:
        raise RobustlabError(f"evaluation needs eps > 0; got threat model {threat}.")
    check_images("evaluate", split.x)
    if num_classes is not None:
        check_labels("evaluate", split.y, num_classes, n=split.x.shape[0])
    if precision == "fp16" and device.type != "cuda":
        raise RobustlabError(f"evaluation precision fp16 needs a CUDA device (this one is {device}); use bf16 or fp32.")


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The model's forward passes in `precision` (the attacks' losses stay float32: attacks.base)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def _clean_correct(model: nn.Module, data: Split, batch_size: int, num_classes: int | None) -> torch.Tensor:
    """(N,) bool on the CPU: the points the model classifies correctly without attack."""
    correct = []
    for x, y in batches(data, batch_size):
        logits = model(x)
        check_outputs(logits, x.shape[0], num_classes)
        correct.append(logits.argmax(1) == y)
    return torch.cat(correct).cpu()


def _open_state(
    path: str | Path | None, world: World, quiet: bool, n_batches: int, settings: dict[str, Any]
) -> EvalState | None:
    """The resume state at `path` (a distributed evaluation keeps none: its batches are shared between ranks)."""
    if path is None or world.distributed:
        return None
    state = EvalState(path, settings)
    if state.resumed and not quiet:
        done = ", ".join(f"{k} {v}/{n_batches}" for k, v in state.batches.items())
        console.print(f"resuming the evaluation from {state.json_path} (batches done: {done})")
    return state


def _prefixes(attacks: list[tuple[str, Attack]]) -> dict[str, tuple[str, int]]:
    """{label of PGD-k: (label of the longest attack of the suite it is a prefix of, k)}; that attack is set to
    report its robustness after each such k."""
    pgds = [(label, a) for label, a in attacks if isinstance(a, PGD)]
    out: dict[str, tuple[str, int]] = {}
    for label, attack in pgds:
        longer = [(other.steps, lb, other) for lb, other in pgds if attack.prefix_of(other)]
        if longer:
            _, parent, other = max(longer, key=lambda c: c[0])
            out[label] = (parent, attack.steps)
            other.report_steps = tuple(sorted({*other.report_steps, attack.steps}))
    return out


def _accuracy(robust_correct: np.ndarray, clean: torch.Tensor) -> float:
    """Accuracy over all points from the per-sample robustness of the clean-correct ones."""
    return float(robust_correct.sum()) / max(len(clean), 1)


def _place(
    label: str,
    arrays: dict[str, np.ndarray],
    correct_idx: np.ndarray,
    n: int,
    per_sample: dict[str, np.ndarray],
    stages: dict[str, dict[str, float]],
) -> None:
    """Spread an attack's per-sample arrays over the clean-correct points to all n points (a point the model gets
    wrong is wrong under every attack); a cascade's stages also go to `stages` as accuracies."""
    for key, robust_correct in arrays.items():
        robust = np.zeros(n, dtype=bool)
        robust[correct_idx] = robust_correct
        per_sample[key] = robust
        if key != label:
            stages.setdefault(label, {})[key[len(label) + 1 :]] = float(robust.mean())


def _run_attack(
    label: str,
    attack: Attack,
    model: nn.Module,
    target: Split,
    batch_size: int,
    seed: int,
    state: EvalState | None,
    advance: Callable[[int], None],
    on_batch_done: Callable[[str, int], None] | None,
    world: World,
    quiet: bool = True,
) -> tuple[dict[str, np.ndarray], float]:
    """Run `attack` over the batches of `target` (the clean-correct points), continuing from `state`.

    Returns per-sample robust arrays over `target` — the attack's under `label`, a cascade's stages under
    "label:stage" — and the seconds spent. Batch b draws from its own generator (seeds.eval_batch), so a
    resumed run gives the same result as an uninterrupted one, and so does a run whose batches are shared
    between ranks (rank r takes batches b ≡ r mod size; the results are gathered in batch order).
    """
    first = state.batches.get(label, 0) if state else 0
    parts = (
        {k: [v] for k, v in state.arrays.items() if k == label or k.startswith(label + ":")}
        if state and first
        else {label: []}
    )
    elapsed = state.seconds.get(label, 0.0) if state and first else 0.0
    advance(first)
    sizes: list[int] = []
    if getattr(attack, "on_stage", False) is None and not console.is_terminal and not quiet:  # no bar: a line per stage
        n_batches = -(-len(target) // batch_size)
        attack.on_stage = lambda stage, robust, n, s: console.print(  # type: ignore[attr-defined]
            f"  {label} batch {len(sizes)}/{n_batches}: after {stage} {robust}/{n} robust ({s:.0f} s)"
        )
    for b, (x, y) in enumerate(batches(target, batch_size)):
        sizes.append(x.shape[0])
        if b < first or not world.mine(b):
            continue
        t0 = time.perf_counter()
        res = attack.run(model, x, y, generator=torch.Generator(device=x.device).manual_seed(seeds.eval_batch(seed, b)))
        parts[label].append((~res.success).cpu().numpy())
        for stage, robust in res.stages.items():
            parts.setdefault(f"{label}:{stage}", []).append(robust.cpu().numpy())
        elapsed += time.perf_counter() - t0
        if state is not None:
            state.record(label, b + 1, elapsed, {k: np.concatenate(v) for k, v in parts.items()})
        advance(world.size)
        if on_batch_done is not None:
            on_batch_done(label, b)
    arrays = {k: np.concatenate(v) if v else np.zeros(0, dtype=bool) for k, v in parts.items()}
    if world.distributed:
        arrays = _gather_batches(arrays, sizes, world, target.x.device)
    return arrays, elapsed


def _gather_batches(
    arrays: dict[str, np.ndarray], sizes: list[int], world: World, device: torch.device
) -> dict[str, np.ndarray]:
    """Reassemble per-sample arrays whose batches were shared round-robin between ranks."""
    keys = sorted(set().union(*world.gather_objects(sorted(arrays))))
    out = {}
    for key in keys:
        local = torch.as_tensor(arrays.get(key, np.zeros(0, dtype=bool)), dtype=torch.uint8, device=device)
        per_rank = [t.cpu().numpy().astype(bool) for t in world.gather_cat(local)]
        offsets, pieces = [0] * world.size, []
        for b, n in enumerate(sizes):
            r = b % world.size
            pieces.append(per_rank[r][offsets[r] : offsets[r] + n])
            offsets[r] += n
        out[key] = np.concatenate(pieces) if pieces else np.zeros(0, dtype=bool)
    return out


def check_outputs(logits: torch.Tensor, n: int, num_classes: int | None) -> None:
    """Raise unless the model returns N×K logits; probabilities (rows on the simplex) are refused."""
    check_logits("evaluate", logits, n, num_classes)
    if (
        logits.shape[1] > 1
        and bool((logits >= 0).all())
        and torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-4)
    ):
        raise RobustlabError(
            "evaluate: the model's outputs are probabilities (non-negative rows summing to 1); attacks need "
            "the logits before the softmax. Remove the final softmax from the model."
        )
