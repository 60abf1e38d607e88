"""Checkpoints: safetensors + JSON, written atomically, never unpickled.

- `save_model(stem, model, meta)` writes `stem.safetensors` (weights) and `stem.json` (architecture,
  its arguments, normalisation, dataset, threat model, method, epoch, metrics, robustlab version).
- `load_model(path)` rebuilds the model from the JSON and loads the weights, with a clear error
  when the weights do not match the architecture.
- `save_state(path, tree)` / `load_state(path)` store a nested structure of tensors, numbers,
  strings, lists and dicts (optimizer, schedule, RNG states, history) in one safetensors file whose
  metadata holds the JSON skeleton: one file, one atomic rename, so a kill mid-write leaves the
  previous state intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from .errors import RobustlabError

MODEL_FILE = "model"  # the selected (best) model in a run directory
LAST_FILE = "last"
STATE_FILE = "train_state.safetensors"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def model_meta(model: torch.nn.Module) -> dict[str, Any]:
    """What it takes to rebuild `model` (an ImageClassifier built by models.create)."""
    return {
        "arch": model.arch,
        "arch_kwargs": model.arch_kwargs,
        "num_classes": model.num_classes,
        "in_channels": model.in_channels,
        "input_size": model.input_size,
        "mean": model.normalize.mean.flatten().tolist(),
        "std": model.normalize.std.flatten().tolist(),
    }


def save_model(stem: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Write `stem.safetensors` and `stem.json`; weights first, so a JSON always has its weights."""
    stem = Path(stem)
    info = {"robustlab_version": __version__, **model_meta(model), **meta}
    _atomic_save_tensors(stem.with_suffix(".safetensors"), model.state_dict(), {"format": "robustlab-model"})
    _atomic_write_text(stem.with_suffix(".json"), json.dumps(info, indent=2, default=str))


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory, `x.safetensors` or `x.json` -> the checkpoint stem (without suffix)."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    elif p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    if not p.with_suffix(".json").exists() or not p.with_suffix(".safetensors").exists():
        raise RobustlabError(
            f"no checkpoint at {path}: expected {p.with_suffix('.safetensors')} and {p.with_suffix('.json')} "
            f"(a run directory holds {MODEL_FILE}.safetensors once its first epoch has finished)."
        )
    return p


def load_meta(path: str | Path) -> dict[str, Any]:
    return json.loads(resolve_checkpoint(path).with_suffix(".json").read_text())


def load_weights(stem: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    with safe_open(str(stem.with_suffix(".safetensors")), framework="pt") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, meta)."""
    from . import models

    stem = resolve_checkpoint(path)
    meta = json.loads(stem.with_suffix(".json").read_text())
    try:
        model = models.create(meta["arch"], meta["num_classes"], meta["in_channels"], meta["input_size"],
                              tuple(meta["mean"]), tuple(meta["std"]), **meta.get("arch_kwargs", {}))
    except KeyError as e:
        raise RobustlabError(f"{stem.with_suffix('.json')}: missing field {e} (not a robustlab checkpoint?).") from None
    load_state_dict_checked(model, load_weights(stem), f"{stem.with_suffix('.safetensors')} ({meta['arch']})")
    return model.to(device).eval(), meta


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict with an error that lists missing, unexpected and mis-shaped entries."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise RobustlabError(f"{where}: the weights do not match the architecture: " + ", ".join(parts) + ".")
    module.load_state_dict(state)


# --- nested training state in one safetensors file ---------------------------------------------

def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if torch.is_tensor(obj):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors) for v in obj], "__tuple__": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training state")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__list__" in obj:
            seq = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(seq) if obj.get("__tuple__") else seq
    return obj


def save_state(path: str | Path, tree: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(tree, tensors)
    _atomic_save_tensors(Path(path), tensors, {"format": "robustlab-train-state", "tree": json.dumps(skeleton)})


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "robustlab-train-state":
            raise RobustlabError(f"{path} is not a robustlab training state.")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _unflatten(json.loads(meta["tree"]), tensors)
