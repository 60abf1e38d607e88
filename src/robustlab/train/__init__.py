"""The generic Trainer: loop, optimizer, schedule, validation-based selection, checkpoint/resume.

It knows nothing about any paper: the objective is a `Method`, paper-specific per-epoch extras are
`Callback`s. Everything random draws from generators the Trainer owns and checkpoints, so a run that
is killed and resumed ends with the same weights as one that was not (same seed, CPU).

Run directory: config.yaml, model.{safetensors,json} (selected on validation), last.{...},
train_state.safetensors (resume), metrics.jsonl (one line per epoch).

Modules: `registry` (Callback and the callback registry), `callbacks` (init_from), `schedule` (optimizer
and learning-rate schedule), `trainer` (the Trainer), `run` (a run from its config: build, checks, train).
"""

from . import callbacks  # noqa: F401  (registers init_from)
from .registry import CALLBACKS, Callback
from .run import build_run, check_restart, run_meta, train_run, warn_if_near_chance
from .schedule import lr_factor, make_optimizer
from .trainer import Trainer, TrainResult

__all__ = [
    "CALLBACKS",
    "Callback",
    "TrainResult",
    "Trainer",
    "build_run",
    "check_restart",
    "lr_factor",
    "make_optimizer",
    "run_meta",
    "train_run",
    "warn_if_near_chance",
]
