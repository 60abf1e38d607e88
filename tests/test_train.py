"""The Trainer: schedules, selection on validation only, NaN stop, resume after SIGKILL."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustlab import checkpoint as ckpt
from robustlab.config import TrainConfig, make_run_config
from robustlab.data import Split
from robustlab.errors import RobustlabError, TrainingDiverged
from robustlab.methods import METHODS
from robustlab.methods.standard import Standard
from robustlab.train import lr_factor, train_run


def _cfg(**train):
    return TrainConfig.model_validate(train)


def test_schedules():
    assert lr_factor(_cfg(epochs=10, schedule={"name": "constant"}), 57, 10) == 1.0
    pw = _cfg(epochs=10, schedule={"name": "piecewise", "milestones": [5, 8], "gamma": 0.1})
    assert [round(lr_factor(pw, e * 10, 10), 6) for e in (0, 4, 5, 7, 8, 9)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    cos = _cfg(epochs=10, schedule={"name": "cosine"})
    assert lr_factor(cos, 0, 10) == 1.0 and lr_factor(cos, 50, 10) == pytest.approx(0.5) and lr_factor(cos, 100, 10) == pytest.approx(0.0)
    oc = _cfg(epochs=10, schedule={"name": "onecycle", "pct_start": 0.25})
    assert lr_factor(oc, 0, 10) == pytest.approx(0.04) and lr_factor(oc, 25, 10) == pytest.approx(1.0)
    assert lr_factor(oc, 100, 10) == pytest.approx(1e-4)
    warm = _cfg(epochs=10, schedule={"name": "cosine", "warmup_epochs": 2})
    assert lr_factor(warm, 0, 10) == pytest.approx(0.05) and lr_factor(warm, 19, 10) == pytest.approx(lr_factor(cos, 19, 10))


def _small(method="pgd_at", epochs=3, **train):
    return make_run_config({
        "method": {"name": method, **({"attack_steps": 2} if method not in ("standard", "explodes_test") else {})},
        "model": {"name": "small_cnn", "width": 8, "hidden": 32},
        "threat": "linf:0.2",
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": {"lr": 0.05}, **train},
    })


def test_run_directory_and_selection_never_touch_the_test_split(tmp_path, digits):
    poisoned = type(digits)(**{**digits.__dict__, "test": Split(torch.full((5, 1, 8, 8), float("nan")), torch.zeros(5, dtype=torch.long))})
    result = train_run(_small(epochs=2), tmp_path, dataset=poisoned, quiet=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "model.safetensors", "model.json", "last.safetensors", "last.json", "train_state.safetensors", "metrics.jsonl"} <= names
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("val_clean" in h and "val_robust" in h for h in history)
    assert not any("test" in k for h in history for k in h)
    best = max(history, key=lambda h: (h["val_robust"], h["val_clean"]))
    assert result.best_epoch == best["epoch"] == ckpt.load_meta(tmp_path)["epoch"]


def test_existing_state_is_never_overwritten_without_resume(tmp_path, digits):
    train_run(_small(epochs=1), tmp_path, dataset=digits, quiet=True)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(RobustlabError, match="--resume"):
        train_run(_small(epochs=1), tmp_path, dataset=digits, quiet=True)
    with pytest.raises(RobustlabError, match="config differs"):
        train_run(_small(epochs=1, seed=5), tmp_path, dataset=digits, quiet=True, resume=True)
    assert (tmp_path / "model.safetensors").read_bytes() == before


class _Explodes(Standard):
    name = "explodes_test"

    def loss(self, model, x, y, ctx):
        loss, stats = super().loss(model, x, y, ctx)
        return (loss * float("nan") if ctx.epoch == 1 else loss), stats


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, digits, monkeypatch):
    monkeypatch.setitem(METHODS._factories, "explodes_test", _Explodes)
    with pytest.raises(TrainingDiverged, match="nan at epoch 2.*epoch 1\\) is intact"):
        train_run(_small("explodes_test", epochs=3), tmp_path, dataset=digits, quiet=True)
    model, meta = ckpt.load_model(tmp_path / "last")
    assert meta["epoch"] == 1 and all(torch.isfinite(p).all() for p in model.parameters())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def _train_cmd(out: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "robustlab", "train", "--dataset", "digits", "--method", "pgd_at", "--threat", "linf:0.2",
           "--epochs", "4", "--set", "model.width=8", "--set", "method.attack_steps=3", "--set", "train.batch_size=32",
           "--out", str(out), "--quiet"]
    return cmd + (["--resume"] if resume else [])


def test_resume_after_sigkill_reproduces_the_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_cmd(straight), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 1):
        time.sleep(0.02)
    time.sleep(0.1)  # now somewhere inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 4, "the kill should land mid-run"
    subprocess.run(_train_cmd(killed, resume=True), env=env, check=True, capture_output=True)
    a, b = (ckpt.load_model(d / "last")[0].state_dict() for d in (straight, killed))
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    ha = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    hb = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    drop = ("time_s",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in ha] == [{k: v for k, v in h.items() if k not in drop} for h in hb]


def test_robust_selection_skips_a_collapsed_checkpoint(tmp_path, digits):
    """A model predicting one class is 'robust' on that class's points; selection must not prefer it."""
    from robustlab.train import Trainer

    trainer = Trainer(*_parts(digits), digits, _cfg(epochs=1), tmp_path)
    collapsed = {"epoch": 1, "val_clean": 0.10, "val_robust": 0.10}
    weak_but_real = {"epoch": 2, "val_clean": 0.85, "val_robust": 0.05}
    assert trainer._score(weak_but_real) > trainer._score(collapsed)
    better = {"epoch": 3, "val_clean": 0.80, "val_robust": 0.07}
    assert trainer._score(better) > trainer._score(weak_but_real)  # among eligible ones: robust accuracy first


def _parts(digits):
    from robustlab import methods, models

    return models.for_dataset("small_cnn", digits, width=4, hidden=8), methods.create("pgd_at", threat="linf:0.2", attack_steps=1)


def test_bf16_autocast_and_channels_last_train_and_fp16_needs_cuda(tmp_path, digits):
    for i, train in enumerate(({"precision": "bf16"}, {"channels_last": True})):
        result = train_run(_small(epochs=1, **train), tmp_path / str(i), dataset=digits, quiet=True)
        rec = result.history[0]
        assert all(math.isfinite(v) for k, v in rec.items() if k.startswith(("train_", "val_")))
        model, _ = ckpt.load_model(tmp_path / str(i))
        assert model(digits.test.x[:4]).dtype == torch.float32  # the checkpoint is float32 whatever the precision
    if not torch.cuda.is_available():
        with pytest.raises(RobustlabError, match="fp16 needs a CUDA device"):
            train_run(_small(epochs=1, precision="fp16"), tmp_path / "fp16", dataset=digits, quiet=True)


@pytest.mark.slow
def test_compiled_model_trains_and_its_checkpoint_loads_plainly(tmp_path, digits):
    train_run(_small(epochs=1, compile=True), tmp_path, dataset=digits, quiet=True)
    model, _ = ckpt.load_model(tmp_path)  # the same keys as an uncompiled model
    assert model(digits.test.x[:4]).shape == (4, 10)


def _test_accuracy(run_dir, digits) -> float:
    model, _ = ckpt.load_model(run_dir)
    with torch.no_grad():
        return (model(digits.test.x).argmax(1) == digits.test.y).float().mean().item()


def test_the_cli_defaults_train_a_real_digits_model_in_five_epochs(tmp_path, digits, capsys):
    from robustlab import cli

    assert cli.main(["train", "--dataset", "digits", "--epochs", "5", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert _test_accuracy(tmp_path / "run", digits) >= 0.90
    assert "near chance" not in capsys.readouterr().err


@pytest.mark.slow
def test_the_cli_defaults_train_a_real_pgd_at_digits_model(tmp_path, digits):
    from robustlab import cli

    argv = ["train", "--dataset", "digits", "--method", "pgd_at", "--threat", "linf:0.2", "--out", str(tmp_path / "run"), "--quiet"]
    assert cli.main(argv) == 0
    assert _test_accuracy(tmp_path / "run", digits) >= 0.90


def test_a_model_left_near_chance_ends_with_a_warning(tmp_path, digits, capsys):
    cfg = make_run_config({"dataset": "digits", "train": {"epochs": 1, "optimizer": {"lr": 1e-6}}})
    train_run(cfg, tmp_path, dataset=digits, quiet=True)
    err = capsys.readouterr().err
    assert "near chance (10% for 10 classes)" in err and "clean validation accuracy" in err
    # an unsupervised encoder's head is untrained by design: no warning for it
    encoder = make_run_config({"dataset": "digits", "model": "basic_encoder", "method": "mi",
                               "train": {"epochs": 1, "select": {"by": "last"}}})
    result = train_run(encoder, tmp_path / "encoder", dataset=digits, quiet=True)
    assert result.best_metrics["val_clean"] < 0.2 and "near chance" not in capsys.readouterr().err
