"""The generic Trainer: loop, optimizer, schedule, validation-based selection, checkpoint/resume.

It knows nothing about any paper: the objective is a `Method`, paper-specific per-epoch extras are
`Callback`s. Everything random draws from generators the Trainer owns and checkpoints, so a run that
is killed and resumed ends with the same weights as one that was not (same seed, CPU).

Run directory: config.yaml, model.{safetensors,json} (selected on validation), last.{...},
train_state.safetensors (resume), metrics.jsonl (one line per epoch).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from .attacks import build as build_attack
from .config import RunConfig, TrainConfig, dump_yaml
from .distributed import World, ddp_wrap, resolve_device
from .data import AugmentSpec, ImageDataset, batches, num_batches
from .data.registry import default_batch_size
from .errors import RobustlabError, TrainingDiverged
from .methods import Method, StepContext
from .registry import Registry
from .rundir import RunLock, write_text_atomic
from .threat import ThreatModel
from .ui import TrainProgress


class Callback:
    """Per-epoch extras. `on_epoch_end` may return metrics to add to the epoch's record."""

    def on_train_start(self, trainer: "Trainer") -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", epoch: int, record: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def on_train_end(self, trainer: "Trainer") -> None:
        pass


CALLBACKS: Registry[Callback] = Registry("callback")


@CALLBACKS.register("init_from")
class InitFrom(Callback):
    """Before the first epoch, copy the weights whose names start with one of `prefixes` from another
    run's selected checkpoint into the model (e.g. a pre-trained encoder under a new classifier).

    `run` is a run label of the same study (a sibling of this run's directory) or a path to a run
    directory or checkpoint. On resume nothing is copied: the weights are already in the training
    state. The source (path, epoch, config fingerprint) is recorded in the checkpoint's JSON.
    """

    def __init__(self, run: str, prefixes: list[str] = ("normalize.", "body.", "neck.encoder.")):
        self.run, self.prefixes = run, tuple(prefixes)

    def source(self, run_dir: Path) -> Path:
        sibling = run_dir.parent / self.run
        return ckpt.resolve_checkpoint(sibling if sibling.exists() else self.run)

    def on_train_start(self, trainer: "Trainer") -> None:
        if trainer.epoch > 0:
            return
        try:
            stem = self.source(trainer.run_dir)
        except RobustlabError as e:
            raise RobustlabError(f"init_from: run {self.run!r} has no checkpoint (train it first; a study trains runs in "
                                 f"the order listed): {e}") from None
        weights = {k: v for k, v in ckpt.load_weights(stem).items() if k.startswith(self.prefixes)}
        if not weights:
            raise RobustlabError(f"init_from {stem}: no weights start with {', '.join(self.prefixes)}.")
        own = trainer.model.state_dict()
        bad = [k for k in weights if k not in own or own[k].shape != weights[k].shape]
        if bad:
            raise RobustlabError(f"init_from {stem}: weights missing or of another shape in this model: {', '.join(bad[:5])}; "
                                 f"the two runs' architectures differ.")
        with torch.no_grad():
            for k, v in weights.items():
                own[k].copy_(v)
        meta = ckpt.load_meta(stem)
        trainer.meta["init_from"] = {"checkpoint": str(stem), "epoch": meta.get("epoch"), "tensors": len(weights),
                                     "config_fingerprint": meta.get("config_fingerprint")}


# --- optimizer and schedule ------------------------------------------------------------------------

def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The multiplier of the base learning rate at global `step` (a pure function: resume needs no state)."""
    s = cfg.schedule
    total = cfg.epochs * steps_per_epoch
    epoch = step / steps_per_epoch
    if s.name == "onecycle":
        peak = s.pct_start * total
        if step < peak:
            return 1 / 25 + (1 - 1 / 25) * step / peak
        t = (step - peak) / max(1.0, total - peak)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    warm = 1.0 if s.warmup_epochs <= 0 else min(1.0, (epoch + 1 / steps_per_epoch) / s.warmup_epochs)
    if s.name == "constant":
        return warm
    if s.name == "piecewise":
        return warm * s.gamma ** sum(epoch >= m for m in s.milestones)
    return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))


# --- the trainer -----------------------------------------------------------------------------------

@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]


class Trainer:
    """Train `model` with `method` on `dataset` under `train_cfg`, writing into `run_dir`."""

    def __init__(
        self,
        model: nn.Module,
        method: Method,
        dataset: ImageDataset,
        train_cfg: TrainConfig,
        run_dir: str | Path,
        *,
        threat: ThreatModel | None = None,
        callbacks: list[Callback] = (),
        meta: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
        quiet: bool = False,
        world: World | None = None,
    ):
        self.device = torch.device(device)
        self.world = world or World()
        with torch.random.fork_rng(devices=[]):  # parts a method builds (e.g. a critic) follow the run's seed
            torch.manual_seed(train_cfg.seed)
            method.build_parts(model, dataset)
        self.model = model.to(self.device)
        self.method = method.to(self.device)
        self.dataset = dataset
        self.cfg = train_cfg
        self.run_dir = Path(run_dir)
        self.threat = threat or method.threat
        self.callbacks = list(callbacks)
        self.meta = dict(meta or {})
        self.quiet = quiet or not self.world.is_main
        self.train_split = dataset.train.to(self.device)
        self.val_split = dataset.val.head(train_cfg.select.max_samples).to(self.device)
        self.augment = self._augment_spec()
        self.batch_size = train_cfg.batch_size or default_batch_size(dataset.name)
        self.steps_per_epoch = num_batches(len(self.train_split), self.batch_size)
        self._setup_precision_and_layout()
        params = list(self.model.parameters()) + list(self.method.parameters())
        self.optimizer = make_optimizer(params, train_cfg)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # re-seeded at the start of every epoch from (seed, epoch, rank): a resumed run draws exactly what
        # the uninterrupted one would have, and no generator state needs saving
        self.data_gen = torch.Generator()
        self.attack_gen = torch.Generator(device=self.device)
        self.net: nn.Module = self.model  # what methods call; a DDP proxy once fit() starts in a distributed run
        self.select_by = self._selection()
        if self.select_by == "robust" and (self.threat is None or self.threat.eps <= 0):
            raise RobustlabError("select.by=robust needs a threat model with eps > 0.")
        # validation PGD accuracy is logged for every run with a threat model (training curves)
        has_threat = self.threat is not None and self.threat.eps > 0
        self.select_attack = build_attack(train_cfg.select.attack, self.threat, seed=train_cfg.seed) if has_threat else None
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        if len(self.train_split) == 0:
            raise RobustlabError(f"{dataset.name}: the training split is empty.")

    # -- setup helpers

    def _augment_spec(self) -> AugmentSpec | None:
        a = self.cfg.augment
        if a == "none":
            return None
        if a == "default":
            return self.dataset.augment if self.dataset.augment.enabled else None
        return AugmentSpec(crop_padding=a.crop_padding, flip=a.flip, pad_mode=a.pad_mode)

    def _setup_precision_and_layout(self) -> None:
        c = self.cfg
        if c.precision == "fp16" and self.device.type != "cuda":
            raise RobustlabError(f"train.precision=fp16 needs a CUDA device (this run is on {self.device}); use bf16 or fp32.")
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if c.precision == "fp16" else None
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if c.compile:
            for part in (self.model.body, self.model.neck, self.model.head):
                part.compile()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _selection(self) -> str:
        by = self.cfg.select.by
        if by == "auto":
            return "robust" if self.method.train_attack is not None else "clean"
        return by

    # -- state

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "history": json.dumps(self.history),
            "best": json.dumps(self.best),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        ckpt.load_state_dict_checked(self.model, state["model"], f"{self.run_dir / ckpt.STATE_FILE} (model)")
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.history = json.loads(state["history"])
        self.best = json.loads(state["best"])

    def _checkpoint_meta(self, kind: str) -> dict[str, Any]:
        return {**self.meta, "kind": kind, "epoch": self.epoch, "metrics": self.history[-1] if self.history else {}}

    # -- evaluation used for selection

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Clean and (if a threat model is set) PGD accuracy on the validation split.

        Batches are shared round-robin between ranks and each batch's attack noise is seeded by its
        index, so the result is the same for any number of processes."""
        was = self.model.training
        self.model.eval()
        out: dict[str, float] = {}
        if len(self.val_split) == 0:
            return out
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        for b, (x, y) in enumerate(batches(self.val_split, 512)):
            if not self.world.mine(b):
                continue
            pred = self.model(x).argmax(1)
            counts[0] += (pred == y).sum()
            if self.select_attack is not None:
                gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 1_000_003 + 2 + b)
                res = self.select_attack.run(self.model, x, y, generator=gen)
                counts[1] += (~res.success & (pred == y)).sum()
        correct, robust = self.world.all_reduce_sum(counts).tolist()
        n = len(self.val_split)
        out["val_clean"] = correct / n
        if self.select_attack is not None:
            out["val_robust"] = robust / n
        self.model.train(was)
        return out

    def _score(self, record: dict[str, Any]) -> tuple[float, ...]:
        if self.select_by == "robust":
            floor = self.cfg.select.min_clean if self.cfg.select.min_clean is not None else 2 / self.dataset.num_classes
            eligible = record.get("val_clean", 0.0) >= floor
            # an ineligible (near-chance) checkpoint is kept only until an eligible one appears
            return (float(eligible), record.get("val_robust", 0.0), record.get("val_clean", 0.0))
        if self.select_by == "clean":
            return (record.get("val_clean", 0.0),)
        return (float(record["epoch"]),)

    # -- the loop

    def fit(self, resume: bool = False) -> TrainResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.run_dir / ckpt.STATE_FILE
        if resume and state_path.exists():
            self._load_state(ckpt.load_state(state_path))
            self._write_metrics()
            self._log(f"resuming {self.run_dir} after epoch {self.epoch}/{self.cfg.epochs}")
        elif not resume:
            refuse_existing_state(self.run_dir)
        self.method.setup(self)
        for cb in self.callbacks:
            cb.on_train_start(self)
        if self.world.distributed:  # after anything that sets weights (resume, init_from): all start from rank 0's
            self.net = ddp_wrap(self.model, self.device, self.cfg.ddp_find_unused or self.method.ddp_find_unused)
            self.world.broadcast_parameters(self.method)
        with TrainProgress(self.cfg.epochs, self.steps_per_epoch, disable=self.quiet) as progress:
            while self.epoch < self.cfg.epochs:
                record = self._train_epoch(progress)
                self.epoch += 1
                record["epoch"] = self.epoch
                if self.epoch % self.cfg.select.every == 0 or self.epoch == self.cfg.epochs:
                    record.update(self.validate())
                for cb in self.callbacks:
                    record.update(cb.on_epoch_end(self, self.epoch, record) or {})
                self.history.append(record)
                self._save(record)
                progress.epoch_done(record, self.best)
        for cb in self.callbacks:
            cb.on_train_end(self)
        assert self.best is not None
        return TrainResult(self.run_dir, self.best["epoch"], self.best, self.history)

    def _seed_epoch(self) -> None:
        e, r, seed = self.epoch, self.world.rank, self.cfg.seed
        self.data_gen.manual_seed(seed * 1_000_003 + e)  # the same permutation and augmentation on every rank
        self.attack_gen.manual_seed(seed * 1_000_003 + 7919 * (r + 1) + e)
        torch.manual_seed(seed * 1_000_003 + 104_729 * (r + 1) + e)  # layers that draw from the global RNG (dropout)

    def _train_epoch(self, progress: TrainProgress) -> dict[str, Any]:
        self.model.train()
        self.method.train()
        self._seed_epoch()
        sums: dict[str, float] = {}
        seen = 0
        t0 = time.perf_counter()
        progress.start_epoch(self.epoch)
        for i, (x, y) in enumerate(batches(self.train_split, self.batch_size, shuffle=True, generator=self.data_gen,
                                           augment=self.augment, device=self.device)):
            if x.shape[0] < self.world.size:
                continue  # a last batch too small to give every rank a sample (the same on all ranks)
            x, y = self.world.shard(x).contiguous(memory_format=self.memory_format), self.world.shard(y)
            step = self.epoch * self.steps_per_epoch + i
            factor = lr_factor(self.cfg, step, self.steps_per_epoch)
            for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr * factor
            ctx = StepContext(self.epoch, self.cfg.epochs, step, self.steps_per_epoch, self.attack_gen)
            with self._autocast():
                loss, stats = self.method.loss(self.net, x, y, ctx)
            if not self.world.all_true(bool(torch.isfinite(loss)), self.device):
                raise TrainingDiverged(
                    f"the training loss became {loss.item()} at epoch {self.epoch + 1}, step {i + 1} "
                    f"(method {self.method.name}, lr {self.base_lrs[0] * factor:.3g}). Training stopped; the last good "
                    f"checkpoint (epoch {self.epoch}) is intact in {self.run_dir}. Lower the learning rate or set train.grad_clip."
                )
            self.optimizer.zero_grad(set_to_none=True)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            self.world.average_gradients(self.method.parameters())  # the model's are averaged by DDP
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            if self.cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            n = x.shape[0]
            seen += n
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            progress.step({k: v / seen for k, v in sums.items()})
        if self.world.distributed:  # sample-weighted means over all ranks
            keys = sorted(sums)
            total = self.world.all_reduce_sum(torch.tensor([sums[k] for k in keys] + [seen], dtype=torch.float64, device=self.device))
            sums, seen = dict(zip(keys, total[:-1].tolist())), int(total[-1])
        record: dict[str, Any] = {f"train_{k}": v / max(1, seen) for k, v in sums.items()}
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["time_s"] = time.perf_counter() - t0
        return record

    def _save(self, record: dict[str, Any]) -> None:
        new_best = self.select_by == "last" or self.best is None or (
            "val_clean" in record and self._score(record) > self._score(self.best))
        if new_best:
            self.best = dict(record)
        if not self.world.is_main:  # every rank keeps the same history and best; only rank 0 writes
            return
        # each file replaced atomically; the state last, so a kill in between redoes this epoch on --resume
        if new_best:
            ckpt.save_model(self.run_dir / ckpt.MODEL_FILE, self.model, self._checkpoint_meta("best"))
        ckpt.save_model(self.run_dir / ckpt.LAST_FILE, self.model, self._checkpoint_meta("last"))
        self._write_metrics()
        ckpt.save_state(self.run_dir / ckpt.STATE_FILE, self._state())

    def _write_metrics(self) -> None:
        if self.world.is_main:
            write_text_atomic(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    def _log(self, msg: str) -> None:
        if not self.quiet:
            from .ui import console

            console.print(msg)


# --- building a run from its config ---------------------------------------------------------------

def build_run(cfg: RunConfig, *, data_root: str | None = None, dataset: ImageDataset | None = None):
    """(dataset, model, method, callbacks) for a run config; raises on any bad name or option."""
    from . import analysis, data, methods, models  # noqa: F401  (analysis modules register their callbacks)

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


def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, data_root: str | None = None,
              dataset: ImageDataset | None = None, quiet: bool = False, device: str | None = None,
              world: World | None = None) -> TrainResult:
    """Train one run from its config into `run_dir` (resuming from its state when `resume`).

    Under torchrun (WORLD_SIZE > 1) every process calls this: they join one process group, each trains
    on its share of every global batch (`train.batch_size` is the global batch), and rank 0 alone writes.
    """
    run_dir = Path(run_dir)
    if world is None:
        world, dev = World.from_env(device or cfg.device)
    else:
        dev = resolve_device(device or cfg.device)
    if cfg.train.batch_size < world.size:
        raise RobustlabError(f"train.batch_size={cfg.train.batch_size} is the global batch and must be at least the number "
                             f"of processes ({world.size}).")
    ds, model, method, callbacks = build_run(cfg, data_root=data_root, dataset=dataset)
    trainer = Trainer(model, method, ds, cfg.train, run_dir, threat=cfg.threat_model, callbacks=callbacks,
                      meta=run_meta(cfg, ds), device=dev, quiet=quiet, world=world)
    # every check before the first write: a refused command changes no file
    with RunLock(run_dir) if world.is_main else contextlib.nullcontext():
        if world.is_main:
            check_restart(cfg, run_dir, resume)
            write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg.model_dump(mode="json")))
        world.barrier()
        result = trainer.fit(resume=resume)
    if world.is_main:
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
        from .config import load_yaml, make_run_config

        old = make_run_config(load_yaml(config_path), str(config_path))
        changed = [k for k in old.training_differences(cfg) if k != "train.epochs"]
        if changed:
            raise RobustlabError(f"{run_dir}: the config differs from the one this run was started with in {', '.join(changed)}; "
                                 f"resume with the same config (only train.epochs may change, to extend the run), or train into "
                                 f"a new run directory.")
    done = ckpt.state_epoch(run_dir / ckpt.STATE_FILE)
    if cfg.train.epochs < done:
        raise RobustlabError(f"{run_dir} has finished {done} epochs; train.epochs={cfg.train.epochs} would shorten it. "
                             f"Pass train.epochs >= {done} to extend it, or train into a new run directory.")


def refuse_existing_state(run_dir: Path) -> None:
    if (run_dir / ckpt.STATE_FILE).exists():
        raise RobustlabError(f"{run_dir} already holds a training state; pass --resume to continue it, or choose another "
                             f"run directory.")


def warn_if_near_chance(result: TrainResult, num_classes: int) -> None:
    """A selected model whose clean validation accuracy is below twice chance has learnt next to nothing:
    its robustness numbers would mean nothing, so say so."""
    clean = result.best_metrics.get("val_clean")
    if clean is not None and clean < 2 / num_classes:
        from .ui import console

        console.print(f"warning: the selected model (epoch {result.best_epoch}) has {100 * clean:.1f}% clean validation accuracy, "
                      f"near chance ({100 / num_classes:.0f}% for {num_classes} classes); train longer or change the learning "
                      f"rate before trusting its evaluation.", markup=False)


__all__ = ["CALLBACKS", "Callback", "TrainResult", "Trainer", "build_run", "lr_factor", "make_optimizer", "train_run"]
