"""The Trainer: the epoch loop, validation-based selection, checkpoints and resume."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import seeds
from ..attacks import build as build_attack
from ..config import TrainConfig
from ..data import AugmentSpec, ImageDataset, batches, num_batches
from ..data.registry import default_batch_size
from ..distributed import World, ddp_wrap
from ..errors import RobustlabError, TrainingDiverged
from ..methods import Method, StepContext
from ..models import ImageClassifier, eval_mode
from ..rundir import write_text_atomic
from ..threat import ThreatModel
from ..ui import TrainProgress
from .registry import Callback
from .schedule import lr_factor, make_optimizer


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
        model: ImageClassifier,
        method: Method,
        dataset: ImageDataset,
        train_cfg: TrainConfig,
        run_dir: str | Path,
        *,
        threat: ThreatModel | None = None,
        callbacks: Sequence[Callback] = (),
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
        self.select_attack = (
            build_attack(train_cfg.select.attack, self.threat, seed=train_cfg.seed)
            if self.threat is not None and self.threat.eps > 0
            else None
        )
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
            raise RobustlabError(
                f"train.precision=fp16 needs a CUDA device (this run is on {self.device}); use bf16 or fp32."
            )
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if c.precision == "fp16" else None
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stub
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
        out: dict[str, float] = {}
        if len(self.val_split) == 0:
            return out
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        with eval_mode(self.model):
            for b, (x, y) in enumerate(batches(self.val_split, 512)):
                if not self.world.mine(b):
                    continue
                pred = self.model(x).argmax(1)
                counts[0] += (pred == y).sum()
                if self.select_attack is not None:
                    gen = torch.Generator(device=self.device).manual_seed(seeds.validation_batch(self.cfg.seed, b))
                    res = self.select_attack.run(self.model, x, y, generator=gen)
                    counts[1] += (~res.success & (pred == y)).sum()
        correct, robust = self.world.all_reduce_sum(counts).tolist()
        n = len(self.val_split)
        out["val_clean"] = correct / n
        if self.select_attack is not None:
            out["val_robust"] = robust / n
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
        self.data_gen.manual_seed(seeds.epoch_data(seed, e))
        self.attack_gen.manual_seed(seeds.epoch_attack(seed, e, r))
        torch.manual_seed(seeds.epoch_global(seed, e, r))

    def _train_epoch(self, progress: TrainProgress) -> dict[str, Any]:
        self.model.train()
        self.method.train()
        self._seed_epoch()
        sums: dict[str, float] = {}
        seen = 0
        t0 = time.perf_counter()
        progress.start_epoch(self.epoch)
        for i, (x, y) in enumerate(
            batches(
                self.train_split,
                self.batch_size,
                shuffle=True,
                generator=self.data_gen,
                augment=self.augment,
                device=self.device,
            )
        ):
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
                    f"checkpoint (epoch {self.epoch}) is intact in {self.run_dir}. Lower the learning rate or set "
                    "train.grad_clip."
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
            total = self.world.all_reduce_sum(
                torch.tensor([sums[k] for k in keys] + [seen], dtype=torch.float64, device=self.device)
            )
            sums, seen = dict(zip(keys, total[:-1].tolist())), int(total[-1])
        record: dict[str, Any] = {f"train_{k}": v / max(1, seen) for k, v in sums.items()}
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["time_s"] = time.perf_counter() - t0
        return record

    def _save(self, record: dict[str, Any]) -> None:
        new_best = (
            self.select_by == "last"
            or self.best is None
            or ("val_clean" in record and self._score(record) > self._score(self.best))
        )
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
            from ..ui import console

            console.print(msg)


def refuse_existing_state(run_dir: Path) -> None:
    if (run_dir / ckpt.STATE_FILE).exists():
        raise RobustlabError(
            f"{run_dir} already holds a training state; pass --resume to continue it, or choose another run directory."
        )
