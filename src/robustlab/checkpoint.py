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
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from . import __version__
from .errors import RobustlabError
from .rundir import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from .models import ImageClassifier

MODEL_FILE = "model"  # the selected (best) model in a run directory
LAST_FILE = "last"
STATE_FILE = "train_state.safetensors"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """One safetensors file, written atomically (serialised here, written by Python: a full disk is an OSError)."""
    data = safetensors.torch.save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def model_meta(model: ImageClassifier) -> dict[str, Any]:
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


def save_model(stem: str | Path, model: ImageClassifier, meta: dict[str, Any]) -> None:
    """Write `stem.safetensors` and `stem.json`; weights first, so a JSON always has its weights."""
    stem = Path(stem)
    info = {"robustlab_version": __version__, **model_meta(model), **meta}
    save_tensors(stem.with_suffix(".safetensors"), model.state_dict(), {"format": "robustlab-model"})
    write_text_atomic(stem.with_suffix(".json"), json.dumps(info, indent=2, default=str))


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


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file robustlab wrote; a damaged or foreign file is a one-line error."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RobustlabError(f"{path} is not valid JSON ({e}); the file is damaged or not robustlab's.") from None
    if not isinstance(data, dict):
        raise RobustlabError(f"{path} holds a JSON {type(data).__name__}; robustlab expected an object of fields.")
    return data


def load_meta(path: str | Path) -> dict[str, Any]:
    return read_json(resolve_checkpoint(path).with_suffix(".json"))


@contextmanager
def open_safetensors(path: Path) -> Iterator[Any]:
    """safetensors' `safe_open`, where a truncated or foreign file is a one-line error naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except SafetensorError as e:
        raise RobustlabError(f"{path} is not a readable safetensors file ({e}); it is truncated or damaged.") from None


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    with open_safetensors(path) as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118 (safe_open is no dict)


def load_weights(stem: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(stem.with_suffix(".safetensors"))[0]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, meta)."""
    from . import models

    stem = resolve_checkpoint(path)
    where = stem.with_suffix(".json")
    meta = read_json(where)
    try:
        model = models.create(
            meta["arch"],
            meta["num_classes"],
            meta["in_channels"],
            meta["input_size"],
            tuple(meta["mean"]),
            tuple(meta["std"]),
            **meta.get("arch_kwargs", {}),
        )
    except KeyError as e:
        raise RobustlabError(f"{where}: missing field {e} (not a robustlab checkpoint?).") from None
    except RobustlabError as e:
        raise RobustlabError(f"{where}: {e}") from None
    except (TypeError, ValueError, RuntimeError) as e:
        raise RobustlabError(f"{where}: its fields do not describe a model ({type(e).__name__}: {e}).") from None
    load_state_dict_checked(model, load_weights(stem), f"{stem.with_suffix('.safetensors')} ({meta['arch']})")
    return model.to(device).eval(), meta


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict with an error that lists missing, unexpected and mis-shaped entries."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
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
    save_tensors(Path(path), tensors, {"format": "robustlab-train-state", "tree": json.dumps(skeleton)})


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    tensors, meta = read_safetensors(path)
    return _unflatten(_state_tree(path, meta), tensors)


def state_epoch(path: str | Path) -> int:
    """The number of finished epochs a training state records (read from its header, no tensors loaded)."""
    path = Path(path)
    with open_safetensors(path) as f:
        meta = f.metadata() or {}
    items = dict(_state_tree(path, meta)["__items__"])
    return int(items["epoch"])


def _state_tree(path: Path, meta: dict[str, str]) -> Any:
    if meta.get("format") != "robustlab-train-state" or "tree" not in meta:
        raise RobustlabError(f"{path} is not a robustlab training state.")
    return json.loads(meta["tree"])


# --- weights of models robustlab did not train ---------------------------------------------------------

NESTED_KEYS = ("state_dict", "model_state_dict")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a `.safetensors`, `.pt` or `.pth` file, read without running any code from it.

    safetensors files hold tensors only; anything else goes through `torch.load(weights_only=True)`, which
    refuses a pickle that would construct anything but tensors and plain containers. RobustBench's layouts are
    unwrapped: the state dict at the top level or under `state_dict` / `model_state_dict`, with or without the
    `module.` prefix that DataParallel adds.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise RobustlabError(f"--weights {path}: no such file.")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise RobustlabError(
            f"--weights {path}: refused: the file is a pickle that holds more than tensors ({first}). robustlab "
            "never unpickles code; save the weights with torch.save(model.state_dict(), ...) or as .safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise RobustlabError(
            f"--weights {path}: not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
            "allowed: .safetensors, or a state dict saved with torch.save (.pt, .pth)."
        ) from None
    for key in NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        kinds = sorted({type(v).__name__ for v in obj.values()}) if isinstance(obj, dict) else [type(obj).__name__]
        raise RobustlabError(
            f"--weights {path}: holds {', '.join(kinds) or 'nothing'}, not a state dict of tensors; allowed: a state "
            f"dict at the top level or under {' or '.join(NESTED_KEYS)}."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_outside_model(
    spec: str,
    weights: str | Path | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    feature_layer: str | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """`models.build_outside(spec)` with the weights of `weights` (when given), behind its normalisation; in eval
    mode on `device`."""
    from .models import OutsideModel, build_outside

    module = build_outside(spec, num_classes, in_channels)
    if weights is not None:
        load_state_dict_checked(module, read_state_dict(weights), f"--weights {weights} ({spec})")
    if mean is not None and hasattr(module, "mean") and hasattr(module, "std"):
        raise RobustlabError(
            f"--model {spec}: the model normalises its input itself (it holds mean/std buffers); --mean/--std would "
            "normalise twice. Drop them."
        )
    model = OutsideModel(
        module, mean, std, feature_layer=feature_layer, in_channels=in_channels, num_classes=num_classes, name=spec
    )
    return model.to(device).eval()
