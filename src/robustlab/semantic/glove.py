"""GloVe text-format word vectors (Pennington et al. 2014), e.g. `glove.6B.50d.txt` (SCARL's choice).

The format is one word per line: the word, then its D numbers, separated by single spaces (a
word2vec-style "COUNT D" first line is skipped). The file
is streamed and only the words the class names need are kept, so a 400k-word file costs one pass.

Class names become words by `tokenize`: lower-case, split at whitespace, `_`, `/` and `,`; a token
that the file lacks and that contains `-` is looked up as its hyphen-separated parts instead. A class
vector is the mean of its words' vectors, e.g. "T-shirt/top" -> mean(v["t-shirt"], v["top"]) when the
file has "t-shirt", else mean(v["t"], v["shirt"], v["top"]).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import RobustlabError

_SEPARATORS = re.compile(r"[\s_/,]+")


def tokenize(name: str) -> list[str]:
    """The GloVe tokens of a class name before the hyphen fallback: "T-shirt/top" -> ["t-shirt", "top"]."""
    return [t for t in _SEPARATORS.split(name.lower()) if t]


def read_glove(path: str | Path, words: set[str]) -> dict[str, np.ndarray]:
    """The vectors (float32, shape (D,)) of those `words` that the GloVe text file at `path` holds."""
    path = Path(path)
    found: dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if dim is not None and line[: line.find(" ")] not in words:
                continue  # the needed words hold no spaces, so their lines start with "word "
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if dim is None:
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    dim = int(parts[1])  # a word2vec-style "count dim" header line
                    continue
                dim = len(parts) - 1
                if dim < 1:
                    raise RobustlabError(f"{path}: line 1 is not 'word v1 ... vD'; is this a GloVe text file?")
            word = " ".join(parts[:-dim])  # a few GloVe releases have words that contain spaces
            if word in words and word not in found:
                try:
                    found[word] = np.asarray(parts[-dim:], dtype=np.float32)
                except ValueError:
                    raise RobustlabError(f"{path}:{lineno}: the vector of {word!r} is not {dim} numbers.") from None
                if len(found) == len(words):
                    break
    return found


def glove_class_vectors(path: str | Path, class_names: list[str]) -> np.ndarray:
    """K×D class vectors: for each class name, the mean GloVe vector of its words (see `tokenize`)."""
    tokens = [tokenize(n) for n in class_names]
    wanted = {t for ts in tokens for t in ts} | {p for ts in tokens for t in ts for p in t.split("-") if p}
    vectors = read_glove(path, wanted)
    rows, missing = [], []
    for name, ts in zip(class_names, tokens):
        words = []
        for t in ts:
            if t in vectors:
                words.append(t)
            elif "-" in t and all(p in vectors for p in t.split("-") if p):
                words += [p for p in t.split("-") if p]
            else:
                missing.append(f"{t!r} (class {name!r})")
        if not ts:
            missing.append(f"(no word in class {name!r})")
        if words:
            rows.append(np.mean([vectors[w] for w in words], axis=0))
    if missing:
        raise RobustlabError(
            f"{path} lacks the words {', '.join(missing)}. Class names are lower-cased and split at spaces, '_', '/' "
            f"and ','; a missing hyphenated word is tried as its parts. Rename the classes, or give the vectors as a "
            f"file (vectors: file:PATH with a .npy, .npz or .json mapping class -> vector)."
        )
    return np.stack(rows)
