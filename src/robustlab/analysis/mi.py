"""Mutual information of a representation, worst-case MI, representation vulnerability and the
Fano-type bound on downstream robust accuracy (Zhu, Zhang & Evans, ICML 2020).

- Normal-case MI Î(X; g(X)): train a critic on (x, g(x)) over the training split for `epochs`
  epochs, then evaluate its bound on the test split (as Zhu et al. §5 estimate it).
- Worst-case MI Î_ε(g): the same, but every critic step is preceded by the batch-level PGD that
  minimises the critic's estimate within the ε-ball (`infomax.minimise_mi`), and the test estimate
  re-attacks every test batch with the trained critic. Same critic, bound, epochs, batch size and
  learning rate as the normal case ("the same critic budget").
- Representation vulnerability RV_ε = Î − Î_ε.
- Robust-accuracy bound [inferred] (the theorem's constants are reconstructed, not read from the paper's text):
  with labels Y uniform over K classes and
  Y -> X -> g(X) (data processing), every downstream classifier f has
      adversarial accuracy(f∘g) <= (I_ε(g) + log 2) / log K      (nats throughout).
  We plug in the estimate Î_ε, so it is an empirical figure, not a guarantee: Î_ε is a lower-bound
  estimate of the MI at the perturbation PGD found, which itself is at least I_ε. MI is never negative,
  so the bound uses max(Î_ε, 0): a negative estimate (estimator noise) gives log 2 / log K, the bound's
  least value. The raw Î_ε stays in `worst_mi`.

Everything is spread over `seeds` independent critics (initialisation and batch order).
`robustlab analyze RUN --what vulnerability [--set layer=logits]` runs it on any trained model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from ..attacks.base import model_untouched
from ..errors import RobustlabError
from ..infomax import MIEstimator, make_critic, minimise_mi
from ..infomax.bounds import Bound, DVVariant
from ..models import ContractModel
from ..registry import check_range
from ..seeds import critic as critic_stream
from ..threat import ThreatModel
from ..ui import progress_bar
from .registry import ANALYSES, AnalysisContext

BOUND_ASSUMPTIONS = (
    "labels uniform over K classes; Y -> X -> g(X) (data processing); constants of the theorem recalled "
    "reconstructed, not checked against the paper's text; Î_ε is an estimate, so the figure is not a guarantee"
)


def robust_accuracy_bound(worst_case_mi: float, num_classes: int) -> float:
    """(max(I_ε, 0) + log 2) / log K, capped at 1: the most adversarial accuracy any downstream classifier can
    reach. The true I_ε is ≥ 0, so a negative estimate counts as 0 (the bound is never below log 2 / log K)."""
    return min(1.0, (max(worst_case_mi, 0.0) + math.log(2.0)) / math.log(num_classes))


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches of equal size (the bounds depend on N): a partial last batch is dropped when a full one exists."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    size = min(batch_size, n)
    return [order[i : i + size] for i in range(0, n - size + 1, size)]


def fit_and_estimate(
    encode: Callable[[torch.Tensor], torch.Tensor],
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    estimator: MIEstimator,
    *,
    threat: ThreatModel | None = None,
    attack_steps: int = 7,
    attack_step: float | None = None,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    on_epoch: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train `estimator`'s critic on (x, encode(x)) and return its MI estimate (nats) on `test_x`.

    With `threat`, x is replaced by the batch-level PGD minimiser of the estimate (worst case), in
    training and at test time. `encode` maps N×... inputs to N×D and is frozen by the caller; it may
    be stochastic (a channel), which is how the tests pair correlated Gaussians. Returns
    {"mi": test estimate, "train_mi": [mean training estimate per epoch]}.
    """
    check_range("epochs", epochs, 1)
    check_range("batch_size", batch_size, 2)
    step = attack_step if attack_step is not None else (threat.eps / 4 if threat is not None else 0.0)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=lr)

    def inputs(x: torch.Tensor) -> torch.Tensor:
        if threat is None:
            return x
        return minimise_mi(encode, estimator, x, threat, steps=attack_steps, step=step)[0]

    curve = []
    for _ in range(epochs):
        estimator.train()
        total = 0.0
        index = _batches(len(train_x), batch_size, generator)
        for idx in index:
            x = inputs(train_x[idx.to(train_x.device)])
            with torch.no_grad():
                z = encode(x)
            est = estimator(x, z)
            optimizer.zero_grad(set_to_none=True)
            est.loss.backward()
            optimizer.step()
            total += est.mi.item()
        curve.append(total / len(index))
        if on_epoch is not None:
            on_epoch()
    estimator.eval()
    values = []
    for idx in _batches(len(test_x), batch_size, None):
        x = inputs(test_x[idx.to(test_x.device)])
        with torch.no_grad():
            values.append(estimator(x, encode(x)).mi.item())
    return {"mi": sum(values) / len(values), "train_mi": curve}


def _summary(values: list[float]) -> dict[str, Any]:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(values) > 1 else 0.0, "values": values}


def representation(model: ContractModel, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map x -> representation at `layer`: "features" (forward_features) or "logits"."""
    if layer == "features":
        return model.forward_features
    if layer == "logits":
        return model
    raise RobustlabError(f"layer={layer!r}; allowed: features, logits.")


def measure_vulnerability(
    model: nn.Module,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    threat: ThreatModel,
    num_classes: int,
    *,
    layer: Literal["features", "logits"] = "features",
    seeds: int = 3,
    seed: int = 0,
    critic: str = "local_global",
    critic_options: dict[str, Any] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    bound: Bound = "dv",
    dv_variant: DVVariant = "exact",
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    attack_steps: int = 7,
    attack_step: float | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Normal-case MI, worst-case MI, RV and the robust-accuracy bound of `model` at `layer`, over `seeds` critics."""
    check_range("seeds", seeds, 1)
    encode = representation(model, layer)
    t0 = time.perf_counter()
    normal: list[float] = []
    worst: list[float] = []
    with model_untouched(model, "eval"), progress_bar(disable=quiet) as bar:
        task = bar.add_task("vulnerability", total=2 * seeds * epochs, info=layer)
        with torch.no_grad():
            z_dim = encode(test_x[:2]).shape[1]
        for s in range(seeds):
            for case, out in (("normal", normal), ("worst", worst)):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(critic_stream(seed, s))
                    estimator = MIEstimator(
                        make_critic(critic, tuple(test_x.shape[1:]), z_dim, mean, std, **(critic_options or {})),
                        bound,
                        dv_variant,
                    ).to(test_x.device)
                result = fit_and_estimate(
                    encode,
                    train_x,
                    test_x,
                    estimator,
                    threat=threat if case == "worst" else None,
                    attack_steps=attack_steps,
                    attack_step=attack_step,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                    seed=critic_stream(seed, s),
                    on_epoch=partial(bar.update, task, advance=1, info=f"{layer} seed {s} {case}"),
                )
                out.append(result["mi"])
    rv = [a - b for a, b in zip(normal, worst)]
    bounds = [robust_accuracy_bound(w, num_classes) for w in worst]
    return {
        "layer": layer,
        "threat": str(threat),
        "num_classes": num_classes,
        "normal_mi": _summary(normal),
        "worst_mi": _summary(worst),
        "rv": _summary(rv),
        "robust_accuracy_bound": _summary(bounds),
        "bound_assumptions": BOUND_ASSUMPTIONS,
        "settings": {
            "seeds": seeds,
            "seed": seed,
            "critic": critic,
            "critic_options": critic_options or {},
            "bound": bound,
            "dv_variant": dv_variant,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "attack_steps": attack_steps,
            "attack_step": attack_step if attack_step is not None else threat.eps / 4,
            "n_train": len(train_x),
            "n_test": len(test_x),
        },
        "seconds": time.perf_counter() - t0,
    }


@ANALYSES.register("vulnerability")
def vulnerability(
    ctx: AnalysisContext,
    layer: Literal["features", "logits"] = "features",
    seeds: int = 3,
    critic: Literal["local_global", "concat"] = "local_global",
    critic_options: dict[str, Any] | None = None,
    bound: Literal["dv", "jsd", "infonce"] = "dv",
    dv_variant: Literal["exact", "code"] = "exact",
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    attack_steps: int = 7,
    attack_step: float | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
) -> dict[str, Any]:
    """Normal-case and worst-case MI of the representation at `layer`, RV and the bound on robust accuracy,
    as mean ± std over `seeds` critics, at the run's threat model (critic fitted on train, estimated on test).
    `critic_options` go to the critic (default hidden 256; e.g. {hidden: 128, width: [32, 64]})."""
    ds = ctx.dataset
    train_x = ds.train.head(max_train).x.to(ctx.device)
    test_x = ds.test.head(max_test).x.to(ctx.device)
    return measure_vulnerability(
        ctx.model,
        train_x,
        test_x,
        ctx.threat,
        ds.num_classes,
        layer=layer,
        seeds=seeds,
        seed=ctx.seed,
        critic=critic,
        critic_options={"hidden": 256} | (critic_options or {}),
        mean=tuple(ds.mean),
        std=tuple(ds.std),
        bound=bound,
        dv_variant=dv_variant,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        attack_steps=attack_steps,
        attack_step=attack_step,
        quiet=ctx.quiet,
    )
