"""The file-format dataset loaders, each reading tiny files written here in the real on-disk format.

Every image written carries its id (0..255) in its first pixel, so the tests can follow each image
through the seeded validation split and check its pixels and label exactly.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import robustlab.data as data
from robustlab.data import DATASETS, idx, imagefolder
from robustlab.data.base import ImageDataset
from robustlab.data.cifar import safe_unpickle
from robustlab.errors import RobustlabError

# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def no_system_data(tmp_path_factory, monkeypatch):
    """Keep the files a system package installed (e.g. Debian's dataset-fashion-mnist) out of these tests."""
    empty = tmp_path_factory.mktemp("no-system-data")
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {name: (empty, pkg) for name, (_, pkg) in idx.SYSTEM_DIRS.items()})


def patterned(n: int, size: int, step: int = 7) -> np.ndarray:
    """n distinct uint8 rows of `size` values, row i starting with its id i."""
    a = ((np.arange(size)[None, :] * step + np.arange(n)[:, None] * 13 + 5) % 256).astype(np.uint8)
    a[:, 0] = np.arange(n)
    return a


def ids(x: torch.Tensor) -> list[int]:
    """The ids (first pixel × 255) of a batch of images."""
    return torch.round(x[:, 0, 0, 0] * 255).long().tolist()


def check_split(ds: ImageDataset, train_x: np.ndarray, train_y: np.ndarray, val_per_class: dict[int, int]) -> None:
    """train ∪ val is the official training set (exact pixels, labels); val is disjoint and stratified."""
    expected = torch.from_numpy(train_x).float() / 255
    seen = []
    for split in (ds.train, ds.val):
        assert split.x.dtype == torch.float32 and split.x.dim() == 4
        for img, label, i in zip(split.x, split.y.tolist(), ids(split.x)):
            assert torch.equal(img, expected[i]), f"pixels of image {i}"
            assert label == int(train_y[i])
            seen.append(i)
    assert sorted(seen) == list(range(len(train_x)))  # disjoint and complete
    counts = {c: int((ds.val.y == c).sum()) for c in val_per_class}
    assert counts == val_per_class


def check_test(ds: ImageDataset, test_x: np.ndarray, test_y: np.ndarray) -> None:
    """The test split is the official one, untouched and in file order."""
    assert torch.equal(ds.test.x, torch.from_numpy(test_x).float() / 255)
    assert ds.test.y.tolist() == [int(v) for v in test_y]
    assert ds.test.y.dtype == torch.long


# ------------------------------------------------------------------------------------------ idx (MNIST)

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i4"): 0x0C}


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    header = bytes([0, 0, IDX_CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)
    return path


def mnist_arrays(n_train: int = 40, n_test: int = 10):
    train_x = patterned(n_train, 28 * 28).reshape(n_train, 28, 28)
    train_y = (np.arange(n_train) % 10).astype(np.uint8)
    test_x = patterned(n_test, 28 * 28, step=3).reshape(n_test, 28, 28)
    test_y = ((np.arange(n_test) * 3) % 10).astype(np.uint8)
    return train_x, train_y, test_x, test_y


def write_mnist(directory: Path, gz: bool = False, arrays=None) -> dict[str, Path]:
    train_x, train_y, test_x, test_y = arrays or mnist_arrays()
    return {
        "train-images-idx3-ubyte": write_idx(directory / "train-images-idx3-ubyte", train_x, gz),
        "train-labels-idx1-ubyte": write_idx(directory / "train-labels-idx1-ubyte", train_y, gz),
        "t10k-images-idx3-ubyte": write_idx(directory / "t10k-images-idx3-ubyte", test_x, gz),
        "t10k-labels-idx1-ubyte": write_idx(directory / "t10k-labels-idx1-ubyte", test_y, gz),
    }


def test_mnist_plain_idx_round_trip(tmp_path):
    write_mnist(tmp_path / "mnist")
    ds = data.load("mnist", root=tmp_path, val_fraction=0.25, seed=3)
    train_x, train_y, test_x, test_y = mnist_arrays()
    assert ds.name == "mnist" and ds.class_names == [str(d) for d in range(10)]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 10)
    assert ds.train.x.shape[1:] == (1, 28, 28) and ds.test.x.shape == (10, 1, 28, 28)
    check_split(ds, train_x[:, None], train_y, {c: 1 for c in range(10)})
    check_test(ds, test_x[:, None], test_y)
    assert ds.mean == (0.0,) and ds.std == (1.0,)
    assert not ds.augment.enabled


def test_mnist_gz_torchvision_layout_via_env(tmp_path, monkeypatch):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path))
    ds = data.load("mnist", val_fraction=0.25)
    train_x, train_y, test_x, test_y = mnist_arrays()
    check_split(ds, train_x[:, None], train_y, {c: 1 for c in range(10)})
    check_test(ds, test_x[:, None], test_y)


def test_val_split_is_seeded(tmp_path):
    write_mnist(tmp_path)
    a = data.load("mnist", root=tmp_path, val_fraction=0.25, seed=1)
    b = data.load("mnist", root=tmp_path, val_fraction=0.25, seed=1)
    c = data.load("mnist", root=tmp_path, val_fraction=0.25, seed=2)
    assert ids(a.val.x) == ids(b.val.x)
    assert sorted(ids(a.val.x)) != sorted(ids(c.val.x))


def test_fashion_mnist_class_names_and_dotted_names(tmp_path):
    files = write_mnist(tmp_path / "fashion-mnist", gz=True)
    # Some unpackers write train-images.idx3-ubyte: accepted too.
    files["train-images-idx3-ubyte"].rename(tmp_path / "fashion-mnist" / "train-images.idx3-ubyte.gz")
    ds = data.load("fashion_mnist", root=tmp_path, mean=[0.286], std=[0.353])
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot" and ds.num_classes == 10
    assert ds.mean == (0.286,) and ds.std == (0.353,)
    check_test(ds, *[a[:, None] if a.ndim == 3 else a for a in mnist_arrays()[2:]])


def test_fashion_mnist_ignores_mnist_files_in_the_root(tmp_path):
    write_mnist(tmp_path)
    data.load("mnist", root=tmp_path)
    with pytest.raises(RobustlabError, match="fashion_mnist: data files not found"):
        data.load("fashion_mnist", root=tmp_path)


def test_mnist_missing_files_names_files_and_dirs(tmp_path):
    with pytest.raises(RobustlabError) as err:
        data.load("mnist", root=tmp_path)
    msg = str(err.value)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in msg
    searched = ", ".join(str(d) for d in (tmp_path / "mnist", tmp_path / "MNIST" / "raw", tmp_path / "MNIST", tmp_path))
    assert f"folders searched: {searched}." in msg and "\n" not in msg  # one line, every folder in search order
    assert "--data-root" in msg and "ROBUSTLAB_DATA" in msg


def test_mnist_partial_files_are_reported(tmp_path):
    files = write_mnist(tmp_path / "mnist")
    files["t10k-labels-idx1-ubyte"].unlink()
    with pytest.raises(RobustlabError, match=r"Incomplete: .*mnist has only"):
        data.load("mnist", root=tmp_path)


def test_idx_bad_magic(tmp_path):
    files = write_mnist(tmp_path)
    p = files["train-images-idx3-ubyte"]
    raw = bytearray(p.read_bytes())
    raw[0:4] = b"\x12\x34\x08\x03"
    p.write_bytes(bytes(raw))
    with pytest.raises(RobustlabError, match="bad idx magic number 0x12340803") as err:
        data.load("mnist", root=tmp_path)
    assert str(p) in str(err.value)


def test_idx_truncated(tmp_path):
    files = write_mnist(tmp_path)
    p = files["t10k-images-idx3-ubyte"]
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(
        RobustlabError, match=r"10×28×28 uint8 values \(7840 bytes of data\).*7740 bytes.*truncated: the data stops at "
        r"byte 7756, inside item 10 of 10 \(784 bytes each\)"
    ) as err:
        data.load("mnist", root=tmp_path)
    assert str(p) in str(err.value)


def test_idx_not_gzip(tmp_path):
    files = write_mnist(tmp_path, gz=True)
    p = files["train-labels-idx1-ubyte"]
    p.write_bytes(b"this is not gzip data")
    with pytest.raises(RobustlabError, match="cannot read idx file") as err:
        data.load("mnist", root=tmp_path)
    assert str(p) in str(err.value)


def test_idx_label_out_of_range(tmp_path):
    train_x, train_y, test_x, test_y = mnist_arrays()
    train_y = train_y.copy()
    train_y[5] = 12
    files = write_mnist(tmp_path, arrays=(train_x, train_y, test_x, test_y))
    with pytest.raises(RobustlabError, match=r"label 12 at index 5 \(byte 13\) is out of range; allowed: 0..9") as err:
        data.load("mnist", root=tmp_path)
    assert str(files["train-labels-idx1-ubyte"]) in str(err.value)


def test_idx_count_and_type_mismatch(tmp_path):
    train_x, train_y, test_x, test_y = mnist_arrays()
    write_mnist(tmp_path, arrays=(train_x, train_y[:-1], test_x, test_y))
    with pytest.raises(RobustlabError, match="holds 39 labels but .* holds 40 images"):
        data.load("mnist", root=tmp_path)
    write_mnist(tmp_path, arrays=(train_x, train_y, test_x.astype(">i4"), test_y))
    with pytest.raises(RobustlabError, match="expected uint8 images"):
        data.load("mnist", root=tmp_path)


# ------------------------------------------------------------------------------------------------ CIFAR


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes pickles as Python 2 did: str and bytes as 8-bit strings, numpy under numpy.core."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_str8(self, obj):
        b = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", "") == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump(obj: dict, style: str) -> bytes:
    """`obj` (str keys) pickled as the official Python 2 files are ("py2") or by Python 3 with protocol 2 ("py3")."""
    if style == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(obj)
        return buf.getvalue()
    enc = {k.encode(): ([n.encode() for n in v] if k.endswith("names") else v) for k, v in obj.items()}
    return pickle.dumps(enc, protocol=2)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar10_files(n_per_batch: int = 4) -> tuple[dict[str, dict], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = 5 * n_per_batch
    train = patterned(n, 3072)
    train_y = np.arange(n) % 10
    test = patterned(6, 3072, step=11)
    test_y = np.array([3, 1, 4, 1, 5, 9])
    files = {
        f"data_batch_{b + 1}": {
            "batch_label": f"training batch {b + 1} of 5",
            "data": train[b * n_per_batch : (b + 1) * n_per_batch],
            "labels": [int(v) for v in train_y[b * n_per_batch : (b + 1) * n_per_batch]],
        }
        for b in range(5)
    }
    files["test_batch"] = {"batch_label": "testing batch 1 of 1", "data": test, "labels": [int(v) for v in test_y]}
    files["batches.meta"] = {"label_names": CIFAR10_NAMES, "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    return files, train, train_y, test, test_y


def write_cifar(root: Path, folder: str, files: dict[str, dict], style: str, archive: str | None) -> Path:
    """Write the pickles into root/folder/, or into the .tar.gz root/archive under folder/."""
    if archive is None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, obj in files.items():
            (root / folder / name).write_bytes(dump(obj, style))
        return root / folder
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / archive, "w:gz") as tar:
        for name, obj in files.items():
            blob = dump(obj, style)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return root / archive


@pytest.mark.parametrize("style", ["py2", "py3"])
@pytest.mark.parametrize("archive", [None, "cifar-10-python.tar.gz"])
def test_cifar10_round_trip(tmp_path, style, archive):
    files, train, train_y, test, test_y = cifar10_files()
    write_cifar(tmp_path, "cifar-10-batches-py", files, style, archive)
    ds = data.load("cifar10", root=tmp_path, val_fraction=0.5, seed=1)
    assert ds.class_names == CIFAR10_NAMES
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 10, 6)
    assert ds.test.x.shape == (6, 3, 32, 32)
    # Rows hold the red plane, then green, then blue, each row-major.
    assert ds.test.x[2, 1, 4, 7].item() == pytest.approx(test[2, 1024 + 4 * 32 + 7] / 255)
    check_split(ds, train.reshape(-1, 3, 32, 32), train_y, {c: 1 for c in range(10)})
    check_test(ds, test.reshape(-1, 3, 32, 32), test_y)
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2471, 0.2435, 0.2616)
    assert (ds.augment.crop_padding, ds.augment.flip) == (4, True)


def test_cifar10_under_subdir_with_stats_override(tmp_path):
    files, *_ = cifar10_files()
    write_cifar(tmp_path / "cifar10", "cifar-10-batches-py", files, "py2", None)
    ds = data.load("cifar10", root=tmp_path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert ds.mean == (0.5, 0.5, 0.5) and ds.std == (0.25, 0.25, 0.25)
    with pytest.raises(RobustlabError, match=r"mean=\(0.5,\) has 1 values; the images have 3 channel"):
        data.load("cifar10", root=tmp_path, mean=(0.5,))


def cifar100_files():
    train = patterned(30, 3072)
    test = patterned(5, 3072, step=5)
    fine = np.arange(30) * 3 % 100
    coarse = np.arange(30) % 20
    files = {
        "train": {"data": train, "fine_labels": [int(v) for v in fine], "coarse_labels": [int(v) for v in coarse], "filenames": ["a.png"] * 30},
        "test": {"data": test, "fine_labels": [99, 0, 1, 2, 3], "coarse_labels": [19, 0, 1, 2, 3], "filenames": ["b.png"] * 5},
        "meta": {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]},
    }
    return files, train, fine, coarse, test


@pytest.mark.parametrize("archive", [None, "cifar-100-python.tar.gz"])
def test_cifar100_fine_and_coarse(tmp_path, archive):
    files, train, fine, coarse, test = cifar100_files()
    write_cifar(tmp_path, "cifar-100-python", files, "py2", archive)
    ds = data.load("cifar100", root=tmp_path, val_fraction=0.0)
    assert ds.num_classes == 100 and ds.class_names[99] == "fine99"
    assert ds.train.y.tolist() == fine.tolist() and len(ds.val) == 0
    check_test(ds, test.reshape(-1, 3, 32, 32), [99, 0, 1, 2, 3])
    assert ds.mean == (0.5071, 0.4865, 0.4409) and ds.std == (0.2673, 0.2564, 0.2762)
    ds = data.load("cifar100", root=tmp_path, val_fraction=0.0, coarse=True)
    assert ds.num_classes == 20 and ds.class_names[19] == "coarse19"
    assert ds.train.y.tolist() == coarse.tolist() and ds.test.y.tolist() == [19, 0, 1, 2, 3]


def test_cifar_missing_files(tmp_path):
    with pytest.raises(RobustlabError) as err:
        data.load("cifar10", root=tmp_path)
    msg = str(err.value)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta", "cifar-10-python.tar.gz"]:
        assert name in msg
    for p in (tmp_path / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", tmp_path / "cifar10" / "cifar-10-batches-py", tmp_path / "cifar10"):
        assert str(p) in msg


def test_cifar_archive_errors(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b garbage, not a gzip stream")
    with pytest.raises(RobustlabError, match="cannot read the archive") as err:
        data.load("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-python.tar.gz") in str(err.value)
    files, *_ = cifar10_files()
    del files["test_batch"]
    write_cifar(tmp_path, "cifar-10-batches-py", files, "py3", "cifar-10-python.tar.gz")
    with pytest.raises(RobustlabError, match="the archive lacks cifar-10-batches-py/test_batch"):
        data.load("cifar10", root=tmp_path)


def test_cifar_wrong_batch_contents(tmp_path):
    files, *_ = cifar10_files()
    files["data_batch_3"]["data"] = files["data_batch_3"]["data"][:, :1000]
    files["data_batch_4"]["labels"] = [1]
    write_cifar(tmp_path, "cifar-10-batches-py", files, "py2", None)
    with pytest.raises(RobustlabError, match=r"data_batch_3: 'data' must be a uint8 array N×3072"):
        data.load("cifar10", root=tmp_path)
    files, *_ = cifar10_files()
    files["data_batch_4"]["labels"][0] = 10
    write_cifar(tmp_path, "cifar-10-batches-py", files, "py2", None)
    with pytest.raises(RobustlabError, match="data_batch_4: label 10 is out of range"):
        data.load("cifar10", root=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02}q\x00(U\x04data")  # truncated
    with pytest.raises(RobustlabError, match="test_batch: not a readable CIFAR pickle"):
        data.load("cifar10", root=tmp_path)


class _Exploit:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_malicious_cifar_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files, *_ = cifar10_files()
    write_cifar(tmp_path, "cifar-10-batches-py", files, "py2", None)
    # Protocol 0 as an attacker would hand-write it: os.system("touch pwned") when unpickled.
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    evil.write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")
    with pytest.raises(RobustlabError, match=r"refusing to unpickle os\.system") as err:
        data.load("cifar10", root=tmp_path)
    assert str(evil) in str(err.value)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({b"data": _Exploit(eval, "1 + 1")}, protocol=2),
        pickle.dumps(_Exploit(__import__("os").system, "true"), protocol=4),
        pickle.dumps(_Exploit(__import__("codecs").encode, "abc", "rot13"), protocol=2),  # codecs.encode, not _codecs
        b"c_codecs\nencode\n(Vabc\nVrot13\ntR.",  # the allowed global, but with a non-latin1 codec
        b"c__builtin__\nbytes\n(I100\ntR.",  # bytes(n) could allocate huge buffers
    ],
)
def test_safe_unpickle_refuses_other_globals(payload):
    with pytest.raises(RobustlabError, match="memory://x"):
        safe_unpickle(io.BytesIO(payload), "memory://x")


def test_safe_unpickle_accepts_numpy_arrays_from_any_protocol():
    arr = patterned(3, 10)
    for protocol in (2, 4, 5):
        out = safe_unpickle(io.BytesIO(pickle.dumps({b"data": arr, "labels": [1, 2]}, protocol=protocol)), "x")
        assert np.array_equal(out["data"], arr) and out["labels"] == [1, 2]


# ------------------------------------------------------------------------------------------------- SVHN


def svhn_mat(path: Path, n: int, step: int, label_dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """Write an SVHN .mat (X 32×32×3×N, y N×1 with 1..10); return (N×3×32×32 images, labels 0..9)."""
    images = patterned(n, 3 * 32 * 32, step).reshape(n, 3, 32, 32)
    digits = np.arange(n) % 10
    y = np.where(digits == 0, 10, digits).astype(label_dtype).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": images.transpose(2, 3, 1, 0), "y": y})
    return images, digits


def test_svhn_round_trip_and_extra(tmp_path):
    train, train_y = svhn_mat(tmp_path / "svhn" / "train_32x32.mat", 20, 7)
    test, test_y = svhn_mat(tmp_path / "svhn" / "test_32x32.mat", 7, 3)
    ds = data.load("svhn", root=tmp_path, val_fraction=0.5)
    assert ds.class_names == [str(d) for d in range(10)]
    assert 10 not in ds.train.y.tolist() and 0 in ds.train.y.tolist()
    check_split(ds, train, train_y, {c: 1 for c in range(10)})
    check_test(ds, test, test_y)
    assert (ds.augment.crop_padding, ds.augment.flip) == (4, False)
    assert ds.mean == (0.0, 0.0, 0.0) and ds.std == (1.0, 1.0, 1.0)

    with pytest.raises(RobustlabError, match="extra_32x32.mat") as err:
        data.load("svhn", root=tmp_path, extra=True)
    assert "Incomplete" in str(err.value)
    extra = patterned(10, 3 * 32 * 32, 5).reshape(10, 3, 32, 32)
    extra[:, 0, 0, 0] = np.arange(20, 30)  # ids continue after train's
    y = np.where(np.arange(10) == 0, 10, np.arange(10)).astype(np.float64).reshape(10, 1)
    scipy.io.savemat(str(tmp_path / "svhn" / "extra_32x32.mat"), {"X": extra.transpose(2, 3, 1, 0), "y": y})
    ds = data.load("svhn", root=tmp_path, val_fraction=0.5, extra=True)
    check_split(ds, np.concatenate([train, extra]), np.concatenate([train_y, np.arange(10)]), {c: 2 for c in range(10)})


def test_svhn_errors(tmp_path):
    with pytest.raises(RobustlabError) as err:
        data.load("svhn", root=tmp_path)
    for s in ("train_32x32.mat", "test_32x32.mat", str(tmp_path / "svhn"), str(tmp_path / "SVHN")):
        assert s in str(err.value)
    svhn_mat(tmp_path / "train_32x32.mat", 10, 7)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    with pytest.raises(RobustlabError, match="not a readable SVHN .mat file") as err:
        data.load("svhn", root=tmp_path)
    assert str(tmp_path / "test_32x32.mat") in str(err.value)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]], np.uint8)})
    with pytest.raises(RobustlabError, match="label 11 is out of range"):
        data.load("svhn", root=tmp_path)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 2), np.uint8), "y": np.array([[1]], np.uint8)})
    with pytest.raises(RobustlabError, match=r"X must be a uint8 array H×W×3×N"):
        data.load("svhn", root=tmp_path)


# -------------------------------------------------------------------------------------------------- npz


def test_npz_explicit_splits_channel_last_uint8(tmp_path):
    train = patterned(12, 5 * 6 * 3).reshape(12, 5, 6, 3)  # N×H×W×C
    test = patterned(4, 5 * 6 * 3, 3).reshape(4, 5, 6, 3)
    train_y, test_y = np.arange(12) % 3, np.array([2, 0, 1, 1])
    np.savez(tmp_path / "set.npz", x_train=train, y_train=train_y, x_test=test, y_test=test_y, class_names=np.array(["a", "b", "c"]))
    ds = data.load("npz", root=tmp_path, path="set.npz", val_fraction=0.25)
    assert ds.class_names == ["a", "b", "c"] and ds.test.x.shape == (4, 3, 5, 6)
    check_split(ds, train.transpose(0, 3, 1, 2), train_y, {0: 1, 1: 1, 2: 1})
    check_test(ds, test.transpose(0, 3, 1, 2), test_y)
    assert ds.mean == (0.0,) * 3 and not ds.augment.enabled


def test_npz_channel_first_float_and_grayscale(tmp_path):
    x = np.random.default_rng(0).random((6, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.array([0, 1, 0, 1, 0, 1]), x_test=x[:2], y_test=np.array([[1], [0]]))
    ds = data.load("npz", root=tmp_path, path="f.npz", val_fraction=0.0)
    assert torch.equal(ds.train.x, torch.from_numpy(x)) and ds.test.y.tolist() == [1, 0]
    g = patterned(4, 36).reshape(4, 6, 6)  # N×H×W
    np.savez(tmp_path / "g.npz", x_train=g, y_train=np.array([0, 1, 0, 1]), x_test=g, y_test=np.array([0, 1, 0, 1]))
    ds = data.load("npz", root=tmp_path, path="g.npz", val_fraction=0.0)
    check_test(ds, g[:, None], [0, 1, 0, 1])


def test_npz_single_set_is_split_and_class_names_default(tmp_path):
    n = 50
    x = patterned(n, 3 * 8 * 8).reshape(n, 3, 8, 8)
    y = np.arange(n) % 5  # 10 per class; no class named by the file
    y[y == 3] = 4  # labels 0, 1, 2, 4: K = 5
    np.savez(tmp_path / "all.npz", x=x, y=y)
    ds = data.load("npz", root=tmp_path, path="all.npz", test_fraction=0.2, val_fraction=0.25, seed=4)
    assert ds.class_names == ["0", "1", "2", "3", "4"]
    assert {c: int((ds.test.y == c).sum()) for c in (0, 1, 2, 4)} == {0: 2, 1: 2, 2: 2, 4: 4}
    assert {c: int((ds.val.y == c).sum()) for c in (0, 1, 2, 4)} == {0: 2, 1: 2, 2: 2, 4: 4}
    everything = ids(ds.train.x) + ids(ds.val.x) + ids(ds.test.x)
    assert sorted(everything) == list(range(n))
    for split in (ds.train, ds.val, ds.test):
        for img, label, i in zip(split.x, split.y.tolist(), ids(split.x)):
            assert torch.equal(img, torch.from_numpy(x[i]).float() / 255) and label == y[i]
    again = data.load("npz", root=tmp_path, path="all.npz", test_fraction=0.2, val_fraction=0.25, seed=4)
    assert ids(again.test.x) == ids(ds.test.x)


def test_npz_path_resolution(tmp_path, monkeypatch):
    x = patterned(4, 16).reshape(4, 4, 4)
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    np.savez(tmp_path / "root" / "sub" / "a.npz", x=x, y=np.array([0, 1, 0, 1]))
    np.savez(tmp_path / "cwd" / "b.npz", x=x, y=np.array([0, 1, 0, 1]))
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path / "root"))
    assert len(data.load("npz", path="sub/a.npz", test_fraction=0.5, val_fraction=0.0).test) == 2
    assert len(data.load("npz", path="b.npz", test_fraction=0.5, val_fraction=0.0).test) == 2
    assert len(data.load("npz", path=str(tmp_path / "cwd" / "b.npz"), test_fraction=0.5, val_fraction=0.0).test) == 2
    with pytest.raises(RobustlabError) as err:
        data.load("npz", path="nope.npz")
    assert "nope.npz" in str(err.value) and str(tmp_path / "root") in str(err.value) and str(tmp_path / "cwd") in str(err.value)
    with pytest.raises(RobustlabError, match="missing required option 'path'"):
        data.load("npz")


def test_npz_errors(tmp_path):
    def load(**arrays):
        np.savez(tmp_path / "e.npz", **arrays)
        return data.load("npz", root=tmp_path, path="e.npz", val_fraction=0.0)

    y4 = np.array([0, 1, 2, 0])
    x = np.full((4, 3, 4, 4), 0.5, np.float32)
    bad = x.copy()
    bad[0], bad[1] = -0.5, 2.0
    with pytest.raises(RobustlabError, match=r"npz train: images must lie in \[0, 1\].*got values in \[-0.5, 2\]"):
        load(x_train=bad, y_train=y4, x_test=x, y_test=y4)
    with pytest.raises(RobustlabError, match="label 3 is out of range; allowed: 0..2"):
        load(x_train=x, y_train=np.array([0, 1, 3, 0]), x_test=x, y_test=y4, class_names=np.array(["a", "b", "c"]))
    with pytest.raises(RobustlabError, match=r"train images \(3, 4, 4\) and test images \(1, 4, 4\) differ in shape"):
        load(x_train=x, y_train=y4, x_test=x[:, :1], y_test=y4)
    with pytest.raises(RobustlabError, match="pickled Python objects"):
        load(x=x, y=y4, class_names=np.array(["a", "b", "c"], dtype=object))
    with pytest.raises(RobustlabError, match="keys x_test, x_train, y_train; expected either"):
        load(x_train=x, y_train=y4, x_test=x)
    with pytest.raises(RobustlabError, match="images must be uint8 .* got int64"):
        load(x=(x * 255).astype(np.int64), y=y4)
    with pytest.raises(RobustlabError, match="have 4 channels; expected 1 or 3"):
        load(x=np.zeros((4, 4, 5, 5), np.uint8), y=y4)
    with pytest.raises(RobustlabError, match="3 labels for 4 images"):
        load(x=x, y=y4[:3])
    (tmp_path / "e.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RobustlabError, match="not a readable numpy file"):
        data.load("npz", root=tmp_path, path="e.npz")


# ------------------------------------------------------------------------------------------ imagefolder


def write_png(path: Path, arr: np.ndarray, suffix: str = ".png") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path.with_suffix(suffix), format="PNG")


def write_folder_tree(base: Path, test_name: str = "val", size: int = 8):
    """train/{cat,dog}/ with 3 images each, <test_name>/{cat,dog}/ with 1 each; returns the arrays in load order."""
    train, test = [], []
    for k, cls in enumerate(["cat", "dog"]):
        for j in range(3):
            img = patterned(1, size * size * 3, 3 + j).reshape(size, size, 3)
            img[0, 0, 0] = len(train)
            write_png(base / "train" / cls / f"img{j}", img, ".PNG" if j == 1 else ".png")
            train.append((img, k))
        img = patterned(1, size * size * 3, 17).reshape(size, size, 3)
        img[0, 0, 0] = 100 + k
        write_png(base / test_name / cls / "t0", img)
        test.append((img, k))
    (base / "train" / "cat" / "notes.txt").write_text("not an image")
    (base / "train" / ".hidden").mkdir()

    def stack(items):
        return np.stack([a for a, _ in items]).transpose(0, 3, 1, 2), np.array([k for _, k in items])

    return stack(train), stack(test)


def test_imagefolder_round_trip(tmp_path):
    (train_x, train_y), (test_x, test_y) = write_folder_tree(tmp_path / "imagenet")
    ds = data.load("imagefolder", root=tmp_path, image_size=8, val_fraction=1 / 3)
    assert ds.class_names == ["cat", "dog"] and ds.train.x.shape[1:] == (3, 8, 8)
    check_split(ds, train_x, train_y, {0: 1, 1: 1})
    check_test(ds, test_x, test_y)
    assert (ds.augment.crop_padding, ds.augment.flip) == (0, True) and ds.mean == (0.0,) * 3


def test_imagefolder_options(tmp_path, monkeypatch):
    (train_x, train_y), (test_x, test_y) = write_folder_tree(tmp_path / "shapes", test_name="test")
    monkeypatch.setattr(imagefolder, "PROGRESS_THRESHOLD", 1)  # exercise the progress bar path too
    ds = data.load(
        "imagefolder", root=tmp_path, path="shapes", image_size=8, max_per_class=2, val_fraction=0.0,
        flip=False, crop_padding=4, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2),
    )  # fmt: skip
    assert ds.train.y.tolist() == [0, 0, 1, 1] and ids(ds.train.x) == [0, 1, 3, 4]
    check_test(ds, test_x, test_y)
    assert (ds.augment.crop_padding, ds.augment.flip) == (4, False) and ds.std == (0.2, 0.2, 0.2)
    gray = data.load("imagefolder", root=tmp_path, path="shapes", image_size=8, grayscale=True, val_fraction=0.0)
    assert gray.train.x.shape == (6, 1, 8, 8) and gray.in_channels == 1


def test_imagefolder_resize_and_center_crop(tmp_path):
    base = tmp_path / "imgs"
    tall = np.zeros((16, 8, 3), np.uint8)  # H=16, W=8: shorter side already 8, crop rows 4..11
    tall[:, :, 0] = np.arange(16)[:, None] * 10
    write_png(base / "train" / "a" / "tall", tall)
    big = np.full((40, 64, 3), (10, 200, 30), np.uint8)  # resized to 8×12.8, then cropped
    write_png(base / "train" / "b" / "big", big)
    Image.fromarray(np.full((48, 64, 3), 77, np.uint8)).save(base / "train" / "b" / "photo.JPG", quality=95)
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    write_png(base / "val" / "a" / "g", gray)
    write_png(base / "val" / "b" / "g", gray)
    ds = data.load("imagefolder", root=tmp_path, path="imgs", image_size=8, val_fraction=0.0)
    assert torch.equal(ds.train.x[0], torch.from_numpy(tall[4:12].transpose(2, 0, 1)).float() / 255)
    assert torch.equal(ds.train.x[1], torch.tensor([10, 200, 30]).float().div(255)[:, None, None].expand(3, 8, 8))
    assert ds.train.x[2].shape == (3, 8, 8) and torch.allclose(ds.train.x[2], torch.tensor(77 / 255), atol=3 / 255)
    assert torch.equal(ds.test.x[0], torch.from_numpy(gray).float().div(255).expand(3, 8, 8))  # gray -> RGB


def test_imagefolder_errors(tmp_path):
    with pytest.raises(RobustlabError) as err:
        data.load("imagefolder", root=tmp_path)
    assert "train/<class>/<image>" in str(err.value) and str(tmp_path / "imagenet") in str(err.value)
    write_folder_tree(tmp_path / "imagenet")
    write_png(tmp_path / "imagenet" / "val" / "bird" / "x", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RobustlabError, match="has folders not in train/: bird"):
        data.load("imagefolder", root=tmp_path, image_size=8)
    (tmp_path / "imagenet" / "val" / "bird" / "x.png").unlink()
    (tmp_path / "imagenet" / "val" / "bird").rmdir()
    (tmp_path / "imagenet" / "train" / "dog" / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(RobustlabError, match="cannot read image") as err:
        data.load("imagefolder", root=tmp_path, image_size=8)
    assert str(tmp_path / "imagenet" / "train" / "dog" / "img2.png") in str(err.value)
    for f in (tmp_path / "imagenet" / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(RobustlabError, match="dog holds no images"):
        data.load("imagefolder", root=tmp_path, image_size=8)


# --------------------------------------------------------------------------------------------- registry


def test_loaders_are_registered_with_the_common_signature():
    import inspect

    for name in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "npz", "imagefolder"):
        assert name in data.names()
        params = inspect.signature(DATASETS.get(name)).parameters
        assert list(params)[:3] == ["root", "val_fraction", "seed"]
        assert "mean" in params and "std" in params
        assert params["val_fraction"].default == 0.1


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(RobustlabError, match="unknown option 'extr'.*did you mean 'extra'"):
        data.load("svhn", root=tmp_path, extr=True)


def test_dataset_and_split_print_a_short_summary_not_their_tensors():
    ds = data.load("digits")
    text = repr(ds)
    assert len(text) < 300 and "tensor" not in text and "\n" not in text, text
    for part in ("digits", f"{len(ds.train)} train", f"{len(ds.val)} val", f"{len(ds.test)} test", "1×8×8", "float32",
                 "[0, 1]", "10 classes"):
        assert part in text, (part, text)
    split = repr(ds.test)
    assert len(split) < 150 and "tensor" not in split, split
    for part in (f"{len(ds.test)} images", "1×8×8", "float32", "[0, 1]", "labels 0..9"):
        assert part in split, (part, split)
    assert str(ds) == text
    empty = repr(ds.test.subset(slice(0, 0)))
    assert "0 images" in empty and "tensor" not in empty
