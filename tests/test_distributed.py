"""torch.distributed on CPU: 2 Gloo processes launched by torchrun, as a user would."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab import checkpoint as ckpt

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun() -> list[str]:
    """torchrun with 2 processes on a free local port (back-to-back launches must not share one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]


def _train(out: Path, method: str = "standard", epochs: int = 3, resume: bool = False, nproc: int = 2) -> list[str]:
    args = ["-m", "robustlab", "--", "train", "--dataset", "digits", "--method", method, "--threat", "linf:0.2",
            "--epochs", str(epochs), "--set", "model.width=8", "--set", "train.batch_size=64", "--quiet", "--out", str(out)]
    if method != "standard":
        args += ["--set", "method.attack_steps=3"]
    if resume:
        args.append("--resume")
    return (_torchrun() if nproc == 2 else [sys.executable]) + args


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"


def _history(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ddp_loss_curve_matches_one_process_with_the_same_global_batch(tmp_path):
    _run(_train(tmp_path / "one", nproc=1))
    _run(_train(tmp_path / "two"))
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert [h["epoch"] for h in two] == [1, 2, 3], "one metrics line per epoch: only rank 0 writes"
    for a, b in zip(one, two):
        # same data order, same global batches, gradients averaged by DDP: equal up to float summation order
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_clean"] == a["val_clean"] and b["val_robust"] == a["val_robust"]
    assert not list((tmp_path / "two").glob("*.tmp"))


def test_ddp_run_killed_and_resumed_matches_the_uninterrupted_run(tmp_path):
    _run(_train(tmp_path / "straight", "pgd_at"))
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train(killed, "pgd_at"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, mid epoch 2
    proc.wait()
    assert 1 <= len(metrics.read_text().splitlines()) < 3
    _run(_train(killed, "pgd_at", resume=True))
    assert _history(killed) == _history(tmp_path / "straight")
    a, b = (ckpt.load_model(d / "last")[0].state_dict() for d in (tmp_path / "straight", killed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_failing_rank_ends_the_whole_run(tmp_path):
    proc = subprocess.Popen(_train(tmp_path / "run", "pgd_at", epochs=50), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        rank1 = None
        while time.time() < deadline and rank1 is None:
            for pid in _children(proc.pid):
                try:
                    if b"LOCAL_RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                        rank1 = pid
                except OSError:
                    pass
            time.sleep(0.1)
        assert rank1 is not None, "no rank-1 worker found"
        while time.time() < deadline and not (tmp_path / "run/metrics.jsonl").exists():
            time.sleep(0.05)  # training is under way
        os.kill(rank1, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)  # not a hang: torchrun stops rank 0 and exits
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "local_rank: 1" in out or "SIGKILL" in out or "Signal 9" in out, out[-2000:]


def test_sharded_evaluation_gives_exactly_the_one_process_table(tmp_path):
    run = tmp_path / "run"
    _run(_train(run, "pgd_at", epochs=1, nproc=1))
    common = ["-m", "robustlab", "--", "eval", str(run), "--suite", "fgsm,pgd-5,cw-5,apgd-ce", "--max-samples", "200", "--batch-size", "32",
              "--no-flags", "--quiet"]
    _run([sys.executable, *common, "--out", str(tmp_path / "one")])
    _run(_torchrun() + [*common, "--out", str(tmp_path / "two")])
    a, b = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("one", "two"))
    for key in ("clean", "attacks", "worst_case", "n", "suite"):
        assert a[key] == b[key], key
    sa, sb = (np.load(tmp_path / d / "eval_samples.npz") for d in ("one", "two"))
    assert all(np.array_equal(sa[k], sb[k]) for k in sa.files)
