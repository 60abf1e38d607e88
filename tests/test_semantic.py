"""Class word vectors: GloVe text files, user files, the packaged sentence encoder (offline, cached)."""

import json

import numpy as np
import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.semantic import class_vectors, encoder, glove_class_vectors, tokenize


def _write_glove(path, vectors, header=False):
    lines = [f"{len(vectors)} {len(next(iter(vectors.values())))}"] if header else []
    lines += [w + " " + " ".join(f"{x:.5f}" for x in v) for w, v in vectors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


VOCAB = {
    "the": [0.1, 0.2, 0.3, 0.4],
    "t-shirt": [1.0, 0.0, 0.0, 0.0],
    "top": [0.0, 1.0, 0.0, 0.0],
    "ankle": [0.0, 0.0, 1.0, 0.0],
    "boot": [0.0, 0.0, 0.0, 1.0],
    "cat": [0.5, -0.5, 0.25, -0.25],
    "ice": [2.0, 2.0, 0.0, 0.0],
    "cream": [0.0, 0.0, 2.0, 2.0],
}


def test_glove_reader_averages_multiword_names(tmp_path):
    path = tmp_path / "glove.tiny.4d.txt"
    _write_glove(path, VOCAB)
    assert tokenize("T-shirt/top") == ["t-shirt", "top"]
    vecs = glove_class_vectors(path, ["T-shirt/top", "Ankle boot", "cat", "ice_cream"])
    assert vecs.shape == (4, 4) and vecs.dtype == np.float32
    np.testing.assert_allclose(vecs[0], [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(vecs[1], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(vecs[2], VOCAB["cat"], atol=1e-6)
    np.testing.assert_allclose(vecs[3], [1, 1, 1, 1])


def test_glove_hyphen_fallback_header_and_missing_words(tmp_path):
    vocab = {k: v for k, v in VOCAB.items() if k != "t-shirt"} | {"t": [3.0, 0, 0, 0], "shirt": [0, 0, 3.0, 0]}
    path = tmp_path / "w2v_style.txt"
    _write_glove(path, vocab, header=True)  # a "COUNT DIM" first line is skipped
    vecs = glove_class_vectors(path, ["T-shirt/top"])
    np.testing.assert_allclose(vecs[0], [1, 1 / 3, 1, 0], atol=1e-6)  # mean of t, shirt, top
    with pytest.raises(RobustlabError, match=r"lacks the words 'zebra' \(class 'zebra'\), 'unicorn'"):
        glove_class_vectors(path, ["cat", "zebra", "unicorn"])


def test_vector_files_and_specs(tmp_path, monkeypatch):
    names = ["a b", "c"]
    arr = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    np.save(tmp_path / "v.npy", arr)
    np.savez(tmp_path / "v.npz", **{"a b": arr[0], "c": arr[1]})
    (tmp_path / "v.json").write_text(json.dumps({"c": [3, 4], "a b": [1, 2], "extra": [0, 0]}))
    for name in ("v.npy", "v.npz", "v.json"):
        out = class_vectors(f"file:{tmp_path / name}", names)
        assert isinstance(out, torch.Tensor) and torch.equal(out, torch.tensor(arr))
    with pytest.raises(RobustlabError, match=r"no vector for the classes \['d'\]"):
        class_vectors(f"file:{tmp_path / 'v.json'}", ["c", "d"])
    with pytest.raises(RobustlabError, match="3×D array"):
        class_vectors(f"file:{tmp_path / 'v.npy'}", ["x", "y", "z"])
    # a relative path is looked up under the data root
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    assert torch.equal(class_vectors("file:v.npy", names), torch.tensor(arr))
    with pytest.raises(RobustlabError, match="not found"):
        class_vectors("glove:missing.txt", names)
    with pytest.raises(RobustlabError, match="allowed: minilm, glove:PATH, file:PATH"):
        class_vectors("word2vec", names)


def test_encoder_cache_is_keyed_by_class_names(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    calls = []

    def fake_encode(texts):
        calls.append(texts)
        return np.arange(len(texts) * 3, dtype=np.float32).reshape(len(texts), 3)

    monkeypatch.setattr(encoder, "encode", fake_encode)
    a = class_vectors("minilm", ["ice_cream", "b"])
    b = class_vectors("minilm", ["ice_cream", "b"])
    assert torch.equal(a, b) and calls == [["ice cream", "b"]]  # second call from the cache; '_' read as a space
    class_vectors("minilm", ["b", "ice_cream"])
    assert len(calls) == 2
    assert sorted(p.suffix for p in (tmp_path / "semantic").iterdir()) == [".json", ".json", ".npy", ".npy"]
