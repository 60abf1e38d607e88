"""A run from its config: build its parts, check the run directory, train with the directory locked."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint as ckpt
from ..config import RunConfig, dump_yaml
from ..data import ImageDataset
from ..distributed import World, resolve_device
from ..errors import RobustlabError
from ..rundir import RunLock, write_text_atomic
from .registry import CALLBACKS
from .trainer import Trainer, TrainResult, refuse_existing_state


def build_run(cfg: RunConfig, *, data_root: str | None = None, dataset: ImageDataset | None = None):
    """(dataset, model, method, callbacks) for a run config; raises on any bad name or option."""
    from .. import data, methods, models

    ds = dataset if dataset is not None else data.load(cfg.dataset.name, root=data_root, **cfg.dataset.options)
    with torch.random.fork_rng(devices=[]):  # initial weights follow the run's seed; the caller's RNG is untouched
        torch.manual_seed(cfg.train.seed)
        model = models.for_dataset(cfg.model.name, ds, **cfg.model.options)
        method = methods.create(cfg.method.name, threat=cfg.threat_model, **cfg.method.options)
    callbacks = [CALLBACKS.create(c.name, **c.options) for c in cfg.callbacks]
    return ds, model, method, callbacks


def run_meta(cfg: RunConfig, ds: ImageDataset) -> dict[str, Any]:
    return {
        "dataset": {"name": cfg.dataset.name, "options": cfg.dataset.options, "class_names": ds.class_names},
        "threat": str(cfg.threat_model),
        "method": {"name": cfg.method.name, "options": cfg.method.options},
        "config_fingerprint": cfg.fingerprint(),
    }


def train_run(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_root: str | None = None,
    dataset: ImageDataset | None = None,
    quiet: bool = False,
    device: str | None = None,
    world: World | None = None,
) -> TrainResult:
    """Train one run from its config into `run_dir` (resuming from its state when `resume`).

    Under torchrun (WORLD_SIZE > 1) every process calls this: they join one process group, each trains
    on its share of every global batch (`train.batch_size` is the global batch), and rank 0 alone writes.
    """
    run_dir = Path(run_dir)
    if world is None:
        world, dev = World.from_env(device or cfg.device)
    else:
        dev = resolve_device(device or cfg.device)
    if (cfg.train.batch_size or 0) < world.size:  # RunConfig fills a missing batch size from the dataset
        raise RobustlabError(
            f"train.batch_size={cfg.train.batch_size} is the global batch and must be at least the number "
            f"of processes ({world.size})."
        )
    ds, model, method, callbacks = build_run(cfg, data_root=data_root, dataset=dataset)
    trainer = Trainer(
        model,
        method,
        ds,
        cfg.train,
        run_dir,
        threat=cfg.threat_model,
        callbacks=callbacks,
        meta=run_meta(cfg, ds),
        device=dev,
        quiet=quiet,
        world=world,
    )
    # every check before the first write: a refused command changes no file
    with RunLock(run_dir) if world.is_main else contextlib.nullcontext():
        if world.is_main:
            check_restart(cfg, run_dir, resume)
            write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg.model_dump(mode="json")))
        world.barrier()
        result = trainer.fit(resume=resume)
    if world.is_main and method.supervised:  # an unsupervised encoder's head is untrained by design
        warn_if_near_chance(result, ds.num_classes)
    return result


def check_restart(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """Refuse to start over a run directory that holds a training state (without `resume`), or to resume it
    under another config. A config that differs only in `train.epochs` extends (or shortens, while that many
    epochs are not yet done) the run."""
    if not resume:
        refuse_existing_state(run_dir)
    if not (run_dir / ckpt.STATE_FILE).exists():
        return
    config_path = run_dir / "config.yaml"
    if config_path.exists():
        from ..config import load_yaml, make_run_config

        old = make_run_config(load_yaml(config_path), str(config_path))
        changed = [k for k in old.training_differences(cfg) if k != "train.epochs"]
        if changed:
            raise RobustlabError(
                f"{run_dir}: the config differs from the one this run was started with in {', '.join(changed)}; "
                f"resume with the same config (only train.epochs may change, to extend the run), or train into "
                f"a new run directory."
            )
    done = ckpt.state_epoch(run_dir / ckpt.STATE_FILE)
    if cfg.train.epochs < done:
        raise RobustlabError(
            f"{run_dir} has finished {done} epochs; train.epochs={cfg.train.epochs} would shorten it. "
            f"Pass train.epochs >= {done} to extend it, or train into a new run directory."
        )


def warn_if_near_chance(result: TrainResult, num_classes: int) -> None:
    """A selected model whose clean validation accuracy is below twice chance has learnt next to nothing:
    its robustness numbers would mean nothing, so say so."""
    clean = result.best_metrics.get("val_clean")
    if clean is not None and clean < 2 / num_classes:
        from ..ui import console

        console.print(
            f"warning: the selected model (epoch {result.best_epoch}) has {100 * clean:.1f}% clean validation "
            "accuracy, "
            f"near chance ({100 / num_classes:.0f}% for {num_classes} classes); train longer or change the learning "
            f"rate before trusting its evaluation.",
            markup=False,
        )
