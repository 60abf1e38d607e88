"""VQ checkpoints: ours (safetensors + JSON, never pickled) and the public taming-transformers files.

- `save_vq(stem, vq, meta)` writes `stem.safetensors` and `stem.json` (format robustlab-vq, the
  architecture, training settings and metrics).
- `load_vq(path)` reads either ours (a directory holding vq.*, or the stem / either file) or a
  PyTorch-Lightning `.ckpt` of a public VQGAN (`load_taming_vqgan`).
- `load_taming_vqgan(path, config)` opens the .ckpt with `torch.load(weights_only=True)` (a restricted
  unpickler that rebuilds tensors and plain containers only, never arbitrary objects), drops the
  training-loss entries (`loss.*`: LPIPS and discriminator) and maps the rest onto `VQModel` with
  the published ddconfig; any missing, unexpected or mis-shaped key is an error that lists them.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..checkpoint import load_state_dict_checked, load_weights, save_tensors
from ..errors import RobustlabError
from ..rundir import write_text_atomic
from .model import PUBLISHED, VQArch, VQModel

VQ_FILE = "vq"
FORMAT = "robustlab-vq"
TAMING_IGNORED_PREFIXES = ("loss.",)  # perceptual + discriminator losses stored by the Lightning trainer


def save_vq(stem: str | Path, vq: VQModel, meta: dict[str, Any]) -> None:
    """Write stem.safetensors (weights first) and stem.json."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": FORMAT, "robustlab_version": __version__, "arch": vq.arch.to_json(), **meta}
    save_tensors(stem.with_suffix(".safetensors"), vq.state_dict(), {"format": FORMAT})
    write_text_atomic(stem.with_suffix(".json"), json.dumps(info, indent=2, default=str))


def _stem(path: Path) -> Path:
    if path.is_dir():
        return path / VQ_FILE
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def load_vq(path: str | Path, config: str | VQArch = "auto") -> tuple[VQModel, dict[str, Any]]:
    """(frozen VQ model in eval mode on the CPU, its JSON metadata) from our checkpoint or a taming .ckpt."""
    p = Path(path).expanduser()
    if p.suffix == ".ckpt":
        return load_taming_vqgan(p, config), {"format": "taming", "path": str(p)}
    stem = _stem(p)
    if not stem.with_suffix(".json").exists() or not stem.with_suffix(".safetensors").exists():
        raise RobustlabError(
            f"no VQ checkpoint at {path}: expected {stem.with_suffix('.safetensors')} and {stem.with_suffix('.json')} "
            f"(written by `robustlab vq train`), or a taming-transformers .ckpt file."
        )
    meta = json.loads(stem.with_suffix(".json").read_text())
    if meta.get("format") != FORMAT:
        raise RobustlabError(
            f"{stem.with_suffix('.json')} is not a robustlab VQ checkpoint (format {meta.get('format')!r})."
        )
    vq = VQModel(VQArch.from_json(meta["arch"]))
    load_state_dict_checked(vq, load_weights(stem), f"{stem.with_suffix('.safetensors')} (VQ model)")
    return freeze(vq), meta


def freeze(vq: VQModel) -> VQModel:
    """Eval mode, no parameter gradients: the discretiser is a fixed auxiliary model."""
    vq.eval()
    for p in vq.parameters():
        p.requires_grad_(False)
    return vq


def read_taming_state(path: Path) -> dict[str, torch.Tensor]:
    """The `state_dict` of a Lightning checkpoint (or a bare state dict), via the restricted unpickler."""
    if not path.exists():
        raise RobustlabError(f"VQGAN checkpoint {path} does not exist.")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise RobustlabError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}). "
            f"robustlab never unpickles arbitrary objects; if you trust the file, re-save only its weights with "
            f"`torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.ckpt')` and pass that file."
        ) from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise RobustlabError(
            f"{path}: no state dict of tensors found (expected a Lightning checkpoint with a 'state_dict' entry)."
        )
    return state


def load_taming_vqgan(path: str | Path, config: str | VQArch = "auto") -> VQModel:
    """A frozen `VQModel` with the weights of a public VQGAN checkpoint.

    `config` names a published architecture (see `PUBLISHED`), is a `VQArch`, or is "auto": the
    published one whose codebook shape (`quantize.embedding.weight`) matches the file.
    """
    path = Path(path).expanduser()
    state = {k: v for k, v in read_taming_state(path).items() if not k.startswith(TAMING_IGNORED_PREFIXES)}
    if config == "auto":
        shape = tuple(state["quantize.embedding.weight"].shape) if "quantize.embedding.weight" in state else None
        matches = [n for n, a in PUBLISHED.items() if (a.n_embed, a.embed_dim) == shape]
        if not matches:
            known = ", ".join(f"{n} ({a.n_embed}×{a.embed_dim})" for n, a in PUBLISHED.items())
            raise RobustlabError(
                f"{path}: codebook quantize.embedding.weight has shape {shape}; no published VQGAN matches "
                f"(known: {known}). Pass the architecture explicitly."
            )
        config = matches[0]
    if isinstance(config, str) and config not in PUBLISHED:
        raise RobustlabError(f"unknown VQGAN config {config!r}; known: auto, {', '.join(PUBLISHED)}.")
    arch = PUBLISHED[config] if isinstance(config, str) else config
    with torch.device("meta"):
        vq = VQModel(arch)
    vq = vq.to_empty(device="cpu")
    load_state_dict_checked(vq, state, f"{path} (taming VQGAN {config if isinstance(config, str) else 'custom'})")
    return freeze(vq)
