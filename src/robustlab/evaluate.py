"""Robustness evaluation: clean accuracy, accuracy under each attack of a suite, per-sample worst case.

A suite is an ordered list of attack specs. Each attack runs on every clean-correct test point
(points the model already gets wrong count as wrong under every attack), so each column is that
attack's own accuracy; the worst case is the share of points that no attack of the suite breaks.

Suite `paper` is the AALP Table 2 protocol: FGSM, PGD-10/20/40/100, CW-10/20/40/100 at the run's
threat model, iterative step size `eval.step` (default eps × `eval.step_ratio` = eps/4). Suite
`autoattack` is one attack, AutoAttack `standard` (its components run in cascade inside it); the
robust accuracy after each component is in `EvalResult.stages`.

Sanity flags (robustlab.sanity) are computed at the end when `flags` is given. With `state_path`
the evaluation is resumable: progress is written after every batch of every attack, and a second
call with the same settings continues where the first stopped, with the same result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .attacks import build as build_attack
from .attacks import check_logits
from .config import FlagConfig
from .data import Split, batches, check_images, check_labels
from .checkpoint import read_json
from .data.npz import read_numpy
from .distributed import World
from .errors import RobustlabError
from .registry import Registry
from .rundir import atomic_path, write_text_atomic
from .threat import ThreatModel
from .ui import console, out, progress_bar

SUITES: Registry[list[str | dict[str, Any]]] = Registry("suite")


@SUITES.register("paper")
def paper_suite() -> list[str | dict[str, Any]]:
    """AALP Table 2: FGSM, PGD-{10,20,40,100}, CW-{10,20,40,100}."""
    return ["fgsm"] + [f"pgd-{k}" for k in (10, 20, 40, 100)] + [f"cw-{k}" for k in (10, 20, 40, 100)]


@SUITES.register("quick")
def quick_suite() -> list[str | dict[str, Any]]:
    """FGSM, PGD-20, CW-20: a fast check, not a paper protocol."""
    return ["fgsm", "pgd-20", "cw-20"]


@SUITES.register("autoattack")
def autoattack_suite() -> list[str | dict[str, Any]]:
    """AutoAttack standard: APGD-CE → APGD-T → FAB-T → Square, as one cascaded attack."""
    return ["autoattack"]


@SUITES.register("autoattack-plus")
def autoattack_plus_suite() -> list[str | dict[str, Any]]:
    """AutoAttack plus: APGD-CE/-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T."""
    return [{"name": "autoattack", "version": "plus"}]


def resolve_suite(suite: str | list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
    return SUITES.get(suite)() if isinstance(suite, str) else list(suite)


def attack_label(spec: str | dict[str, Any]) -> str:
    if isinstance(spec, str):
        return spec
    extra = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({extra})" if extra else str(spec["name"])


@dataclass
class EvalResult:
    """Accuracies in [0, 1]; `per_sample[name]` is a bool array (robust to that attack).

    `stages[attack][component]` is the accuracy after that component of a cascaded attack
    (AutoAttack), with per-sample arrays under "attack:component"; `flags` are the sanity flags.
    """

    threat: str
    suite: list[str]
    n: int
    clean: float
    attacks: dict[str, float]
    worst_case: float
    step: float
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: list[dict[str, Any]] = field(default_factory=list)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_sample")
        return d

    def row(self) -> dict[str, float]:
        """clean, each attack, worst case — in suite order."""
        return {"clean": self.clean, **self.attacks, "worst case": self.worst_case}

    def robust(self, n: int | None = None) -> np.ndarray:
        """Per-sample worst case (robust to every attack of the suite) over the first n points."""
        rows = [self.per_sample["clean"]] + [self.per_sample[a] for a in self.suite]
        return np.logical_and.reduce(rows)[:n]

    def save(self, run_dir: str | Path, stem: str = "eval") -> None:
        """Write <stem>_samples.npz, <stem>.md and, last, <stem>.json (what `load` and a study look for)."""
        run_dir = Path(run_dir)
        with atomic_path(run_dir / f"{stem}_samples.npz") as tmp:
            np.savez_compressed(tmp, **self.per_sample)
        write_text_atomic(run_dir / f"{stem}.md", markdown_table({run_dir.name: self}) + stages_lines(self) + flag_lines(self.flags))
        write_text_atomic(run_dir / f"{stem}.json", json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, run_dir: str | Path, stem: str = "eval") -> "EvalResult":
        d = read_json(Path(run_dir) / f"{stem}.json")
        samples = Path(run_dir) / f"{stem}_samples.npz"
        per = read_numpy(samples) if samples.exists() else {}
        try:
            return cls(**d, per_sample=per)
        except TypeError as e:
            raise RobustlabError(f"{Path(run_dir) / (stem + '.json')} is not a robustlab evaluation ({e}).") from None


class EvalState:
    """An evaluation's progress on disk: <stem>.json (settings, batches done and seconds per attack)
    and <stem>.npz (the per-sample results of the finished batches). Both are replaced atomically."""

    def __init__(self, path: str | Path, settings: dict[str, Any]):
        path = Path(path)
        self.json_path, self.npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
        self.settings = json.loads(json.dumps(settings))
        self.batches: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.arrays: dict[str, np.ndarray] = {}
        if self.json_path.exists() and self.npz_path.exists():
            saved = read_json(self.json_path)
            if saved.get("settings") == self.settings:
                self.batches, self.seconds = saved["batches"], saved["seconds"]
                self.arrays = read_numpy(self.npz_path)

    @property
    def resumed(self) -> bool:
        return bool(self.batches)

    def record(self, label: str, batches_done: int, seconds: float, arrays: dict[str, np.ndarray]) -> None:
        self.arrays.update(arrays)
        self.batches[label], self.seconds[label] = batches_done, seconds
        with atomic_path(self.npz_path) as tmp:
            np.savez(tmp, **self.arrays)
        # written last: it never claims batches the npz lacks
        write_text_atomic(self.json_path, json.dumps({"settings": self.settings, "batches": self.batches, "seconds": self.seconds}))

    def remove(self) -> None:
        self.json_path.unlink(missing_ok=True)
        self.npz_path.unlink(missing_ok=True)


def fingerprint(*tensors: torch.Tensor) -> str:
    """A hash of tensors' contents (model weights, data) for telling evaluations apart."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


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
    on_attack_done: Callable[[str, np.ndarray], None] | None = None,
    on_batch_done: Callable[[str, int], None] | None = None,
    world: World | None = None,
    precision: str = "fp32",
) -> EvalResult:
    """Evaluate `model` on `split` under every attack of `suite` (see module doc).

    With a distributed `world` (torchrun), the attack batches are shared round-robin between the ranks
    and the per-sample results gathered: every rank returns the same table as one process would (each
    batch draws from its own seeded generator). The resume state is then not used.

    `num_classes` (default: the model's) is the dataset's class count the logits must have. `flags`
    computes the sanity flags, reusing the per-sample results of `flag_context` (other suites on the
    same points). `state_path` makes the evaluation resumable. `on_batch_done(label, batch)` is
    called after each batch of each attack.
    """
    from . import sanity

    threat = ThreatModel.parse(threat)
    if threat.eps <= 0:
        raise RobustlabError(f"evaluation needs eps > 0; got threat model {threat}.")
    device = torch.device(device) if device is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    num_classes = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    check_images("evaluate", split.x)
    if num_classes is not None:
        check_labels("evaluate", split.y, num_classes, n=split.x.shape[0])
    if precision == "fp16" and device.type != "cuda":
        raise RobustlabError(f"evaluation precision fp16 needs a CUDA device (this one is {device}); use bf16 or fp32.")
    autocast = (contextlib.nullcontext() if precision == "fp32" else
                torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16))
    specs = resolve_suite(suite)
    step = step if step is not None else threat.eps * step_ratio
    attacks = [(attack_label(s), build_attack(s, threat, defaults={"step": step}, seed=seed, num_classes=num_classes)) for s in specs]
    was_training = model.training
    model.eval()
    data = split.to(device)
    n = len(data)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    correct = []
    with torch.no_grad():
        for x, y in batches(data, batch_size):
            logits = model(x)
            check_outputs(logits, x.shape[0], num_classes)
            correct.append(logits.argmax(1) == y)
    clean = torch.cat(correct).cpu()
    seconds["clean"] = time.perf_counter() - t0
    per_sample = {"clean": clean.numpy()}
    stages: dict[str, dict[str, float]] = {}
    correct_idx = torch.nonzero(clean).flatten()
    target = data.subset(correct_idx.to(device))
    n_batches = -(-len(target) // batch_size) if len(target) else 0
    world = world or World()
    quiet = quiet or not world.is_main
    state = None
    if state_path is not None and not world.distributed:
        settings = {"threat": str(threat), "suite": specs, "step": step, "batch_size": batch_size, "seed": seed,
                    "model": fingerprint(*model.state_dict().values()), "data": fingerprint(split.x, split.y)}
        state = EvalState(state_path, settings)
        if state.resumed and not quiet:
            done = ", ".join(f"{k} {v}/{n_batches}" for k, v in state.batches.items())
            console.print(f"resuming the evaluation from {state.json_path} (batches done: {done})")
    with progress_bar(disable=quiet) as bar, autocast:
        task = bar.add_task("evaluate", total=len(attacks) * n_batches, info="")
        for label, attack in attacks:
            arrays, seconds[label] = _run_attack(label, attack, model, target, batch_size, seed, state,
                                                 lambda b: bar.update(task, advance=b, info=label), on_batch_done, world, quiet)
            for key, robust_correct in arrays.items():
                robust = np.zeros(n, dtype=bool)
                robust[correct_idx.numpy()] = robust_correct
                per_sample[key] = robust
                if key != label:
                    stages.setdefault(label, {})[key[len(label) + 1:]] = float(robust.mean())
            if on_attack_done is not None:
                on_attack_done(label, per_sample[label])
            if not quiet:
                console.print(f"  {label:<10} {per_sample[label].mean():7.2%}  ({seconds[label]:.1f}s)")
    model.train(was_training)
    result = EvalResult(
        threat=str(threat),
        suite=[a for a, _ in attacks],
        n=n,
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
        result.flags = sanity.check(model, split, threat, [result, *flag_context], flags, num_classes=num_classes, seed=seed,
                                    device=device, batch_size=batch_size)
    if state is not None:
        state.remove()
    return result


def _run_attack(label, attack, model, target: Split, batch_size: int, seed: int, state: EvalState | None,
                advance: Callable[[int], None], on_batch_done: Callable[[str, int], None] | None,
                world: World, quiet: bool = True) -> tuple[dict[str, np.ndarray], float]:
    """Run `attack` over the batches of `target` (the clean-correct points), continuing from `state`.

    Returns per-sample robust arrays over `target` — the attack's under `label`, a cascade's stages under
    "label:stage" — and the seconds spent. Batch b draws from its own generator seeded by (seed, b), so a
    resumed run gives the same result as an uninterrupted one, and so does a run whose batches are shared
    between ranks (rank r takes batches b ≡ r mod size; the results are gathered in batch order).
    """
    first = state.batches.get(label, 0) if state else 0
    parts = {k: [v] for k, v in state.arrays.items() if k == label or k.startswith(label + ":")} if first else {label: []}
    elapsed = state.seconds.get(label, 0.0) if first else 0.0
    advance(first)
    sizes: list[int] = []
    if getattr(attack, "on_stage", False) is None and not console.is_terminal and not quiet:  # no bar: a line per stage
        n_batches = -(-len(target) // batch_size)
        attack.on_stage = lambda stage, robust, n, s: console.print(
            f"  {label} batch {len(sizes)}/{n_batches}: after {stage} {robust}/{n} robust ({s:.0f} s)")
    for b, (x, y) in enumerate(batches(target, batch_size)):
        sizes.append(x.shape[0])
        if b < first or not world.mine(b):
            continue
        t0 = time.perf_counter()
        gen = torch.Generator(device=x.device).manual_seed(seed * 1_000_003 + b)
        res = attack.run(model, x, y, generator=gen)
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


def _gather_batches(arrays: dict[str, np.ndarray], sizes: list[int], world: World, device) -> dict[str, np.ndarray]:
    """Reassemble per-sample arrays whose batches were shared round-robin between ranks."""
    keys = sorted(set().union(*world.gather_objects(sorted(arrays))))
    out = {}
    for key in keys:
        local = torch.as_tensor(arrays.get(key, np.zeros(0, dtype=bool)), dtype=torch.uint8, device=device)
        per_rank = [t.cpu().numpy().astype(bool) for t in world.gather_cat(local)]
        offsets, pieces = [0] * world.size, []
        for b, n in enumerate(sizes):
            r = b % world.size
            pieces.append(per_rank[r][offsets[r]: offsets[r] + n])
            offsets[r] += n
        out[key] = np.concatenate(pieces) if pieces else np.zeros(0, dtype=bool)
    return out


def check_outputs(logits: torch.Tensor, n: int, num_classes: int | None) -> None:
    """Raise unless the model returns N×K logits; probabilities (rows on the simplex) are refused."""
    check_logits("evaluate", logits, n, num_classes)
    if logits.shape[1] > 1 and bool((logits >= 0).all()) and torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-4):
        raise RobustlabError("evaluate: the model's outputs are probabilities (non-negative rows summing to 1); attacks need "
                             "the logits before the softmax. Remove the final softmax from the model.")


def markdown_table(results: dict[str, EvalResult], digits: int = 2) -> str:
    """Rows = runs, columns = clean, each attack, worst case (accuracy %)."""
    if not results:
        return ""
    columns: list[str] = []
    for r in results.values():
        for c in r.row():
            if c not in columns:
                columns.append(c)
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, r in results.items():
        row = r.row()
        cells = [f"{100 * row[c]:.{digits}f}" if c in row else "–" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stages_lines(result: EvalResult) -> str:
    """One line per cascaded attack: robust accuracy after each of its components."""
    return "".join(f"\n{attack}: " + " → ".join(f"{name} {100 * acc:.2f}%" for name, acc in comps.items()) + "\n"
                   for attack, comps in result.stages.items())


def flag_lines(flags: list[dict[str, Any]]) -> str:
    """The sanity flags as text: raised ones with their explanation, then a summary of the checks."""
    if not flags:
        return ""
    raised = [f for f in flags if f["raised"]]
    lines = [f"\nFLAG {f['name']}: {f['detail']}\n  {f['explanation']}" for f in raised]
    checked = ", ".join(f"{f['name']} (n={f['n']})" for f in flags if f["checked"] and not f["raised"])
    skipped = ", ".join(f"{f['name']} ({f['detail']})" for f in flags if not f["checked"])
    lines.append(f"\nsanity flags: {len(raised)} raised" + (f"; passed: {checked}" if checked else "") +
                 (f"; not checked: {skipped}" if skipped else ""))
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, EvalResult], title: str = "") -> None:
    from rich.table import Table

    first = next(iter(results.values()))
    table = Table(title=title or f"accuracy (%) under {first.threat}, n={first.n}")
    table.add_column("run")
    columns = list(first.row())
    for c in columns:
        table.add_column(c, justify="right")
    for name, r in results.items():
        row = r.row()
        table.add_row(name, *[f"{100 * row[c]:.2f}" if c in row else "–" for c in columns])
    out.print(table)
    for r in results.values():
        text = stages_lines(r) + flag_lines(r.flags)
        if text:
            out.print(text.strip("\n"), markup=False)
