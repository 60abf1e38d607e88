"""The fault suite: bad input, two writers, kill -9 at random moments, a full disk.

Every probe counts into `FAULTS` (printed at the end of the test session by conftest and quoted in
docs/faults.md): probes tried, tracebacks (goal 0), runs whose data was lost or mixed (goal 0),
kill-and-resume trials that matched the uninterrupted result (goal: all). The default run has one kill
trial per command; `pytest -m slow tests/test_faults.py` runs five per command and the study's.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab import checkpoint as ckpt
from robustlab import cli
from robustlab.config import make_run_config
from robustlab.train import train_run

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
FAULTS = {"probes": 0, "tracebacks": 0, "lost_or_mixed": 0, "kill_trials": 0, "kill_matched": 0}


def robustlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "robustlab", *args]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """cli.main in this process -> (exit code, stderr); counts the probe and any traceback."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    FAULTS["probes"] += 1
    FAULTS["tracebacks"] += "Traceback" in err
    return code, err


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` (relative name -> bytes) but the lock files: what "changes no file" compares."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A digits run trained for 2 epochs (a real checkpoint to damage and to evaluate)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("faults") / "run"
    cfg = make_run_config({"dataset": "digits", "method": "standard", "threat": "linf:0.2", "train": {"epochs": 2}})
    train_run(cfg, out, quiet=True)
    return out


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# --- bad input: one line, exit 2, no traceback, and no file changed ----------------------------------

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _damage(kind: str, d: Path) -> None:
    if kind == "truncated safetensors":
        _truncate(d / "model.safetensors")
    elif kind == "garbage safetensors":
        (d / "model.safetensors").write_bytes(b"not a safetensors file" * 20)
    elif kind == "model.json not JSON":
        (d / "model.json").write_text("{arch: small_cnn")
    elif kind == "model.json wrong types":
        meta = json.loads((d / "model.json").read_text())
        (d / "model.json").write_text(json.dumps({**meta, "num_classes": "ten"}))
    elif kind == "model.json missing fields":
        (d / "model.json").write_text(json.dumps({"arch": "small_cnn"}))
    elif kind == "model.json a list":
        (d / "model.json").write_text("[1, 2]")


DAMAGED = ["truncated safetensors", "garbage safetensors", "model.json not JSON", "model.json wrong types",
           "model.json missing fields", "model.json a list"]


@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_checkpoint_is_one_line(kind, run, tmp_path, capsys):
    d = _copy(run, tmp_path / "run")
    _damage(kind, d)
    before = tree(d)
    code, err = run_cli(["eval", str(d), "--max-samples", "5", "--no-flags"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "model." in err
    assert tree(d) == before


BAD_ARGS = [
    (["eval", "{run}", "--batch-size", "0"], "allowed: an integer >= 1"),
    (["eval", "{run}", "--n", "0"], "allowed: an integer >= 1"),
    (["eval", "{run}", "--n", "-5"], "allowed: an integer >= 1"),
    (["eval", "{run}", "--max-samples", "abc"], "is not an integer"),
    (["eval", "{run}", "--threat", "linf:2"], "eps"),
    (["eval", "{run}", "--threat", "linf:abc"], "linf:abc"),
    (["eval", "{tmp}/nothing"], "no checkpoint at"),
    (["train", "--dataset", "digits", "--set", "train.epochs=[1", "--out", "{tmp}/t"], "train.epochs=[1"),
    (["train", "--dataset", "digits", "--set", "train.epochz=3", "--out", "{tmp}/t"], "did you mean 'epochs'"),
    (["train", "--dataset", "digitz", "--out", "{tmp}/t"], "Did you mean 'digits'"),
    (["train", "--dataset", "digits", "--method", "tradez", "--out", "{tmp}/t"], "Did you mean 'trades'"),
    (["train", "--dataset", "digits", "--set", "train.batch_size=0", "--out", "{tmp}/t"], "batch_size"),
    (["train", "--dataset", "mnist", "--data-root", "{tmp}/empty", "--out", "{tmp}/t"], "folders searched: {tmp}/empty/mnist"),
    (["train", "--config", "{tmp}/missing.yaml"], "does not exist"),
    (["study", "{tmp}/bad.yaml"], "invalid YAML"),
    (["sweep", "{run}", "0.1", "--eps", "0.05"], "comma-separated"),
    (["analyze", "{run}", "--what", "fishr"], "Did you mean 'fisher'"),
    (["analyze", "{run}", "--what", "similarity", "--set", "vectors=file:{tmp}/objects.npy"], "pickled Python objects"),
    (["list", "tradez"], "Did you mean 'trades'"),
]


@pytest.mark.parametrize("argv,fragment", BAD_ARGS, ids=[" ".join(a[:3]) + "|" + f for a, f in BAD_ARGS])
def test_bad_input_is_one_line(argv, fragment, run, tmp_path, capsys):
    d = _copy(run, tmp_path / "run")
    (tmp_path / "bad.yaml").write_text("name: x\nruns: [\n")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    before = tree(tmp_path)
    argv = [a.format(run=d, tmp=tmp_path) for a in argv]
    fragment = fragment.format(tmp=tmp_path)
    try:
        code, err = run_cli(argv, capsys)
    except SystemExit as e:  # argparse's own one-line usage error
        code, err = e.code, capsys.readouterr().err
        FAULTS["probes"] += 1
        FAULTS["tracebacks"] += "Traceback" in err
    assert code == 2 and "Traceback" not in err, err
    assert fragment in err, err
    assert err.strip().splitlines()[-1].startswith(("robustlab", "usage")) or "error:" in err
    assert tree(tmp_path) == before, "a refused command changed a file"


def test_object_array_in_an_eval_state_file_is_one_line(run, tmp_path, capsys, monkeypatch):
    import robustlab.evaluate

    d = _copy(run, tmp_path / "run")
    cmd = ["eval", str(d), "--suite", "fgsm,pgd-5", "--max-samples", "10", "--no-flags"]
    monkeypatch.setattr(robustlab.evaluate.EvalState, "remove", lambda self: None)  # keep the state as if killed at the end
    assert run_cli(cmd, capsys)[0] == 0
    np.savez(d / "eval_custom_state.npz", fgsm=np.array([object()] * 3, dtype=object))
    code, err = run_cli(cmd, capsys)
    assert code == 2 and "pickled Python objects" in err and "eval_custom_state.npz" in err and "Traceback" not in err, err


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(run, capsys, monkeypatch):
    import robustlab.evaluate

    def broken(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(robustlab.evaluate, "evaluate", broken)
    code, err = run_cli(["eval", str(run), "--no-flags"], capsys)
    assert code == 1 and "internal error (ZeroDivisionError: boom)" in err and "--debug" in err
    assert "Traceback" not in err
    code = cli.main(["eval", str(run), "--no-flags", "--debug"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err


# --- one writer per directory ------------------------------------------------------------------------

def test_two_concurrent_trainings_one_is_refused_and_the_other_is_intact(tmp_path):
    out = tmp_path / "run"
    # PGD-AT: long enough (~1 s an epoch) that the second process is up before the first has finished, also on a
    # loaded machine (20 epochs of standard training once ended before the second's lock check)
    cmd = robustlab("train", "--dataset", "digits", "--method", "pgd_at", "--epochs", "10", "--out", str(out), "--quiet")
    first = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / ".lock").exists() or not (out / ".lock").read_text().strip():
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    FAULTS["probes"] += 1
    FAULTS["tracebacks"] += "Traceback" in second.stderr
    assert second.returncode == 2, second.stderr
    assert f"another robustlab process (pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert first.wait(timeout=120) == 0, first.stderr.read()
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    intact = [h["epoch"] for h in history] == list(range(1, 11)) and ckpt.state_epoch(out / ckpt.STATE_FILE) == 10
    FAULTS["lost_or_mixed"] += not intact
    assert intact


def test_eval_is_refused_while_a_study_or_training_holds_the_directory(run, tmp_path, capsys):
    from robustlab.rundir import RunLock

    d = _copy(run, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from robustlab.rundir import RunLock\n"
                               f"RunLock({str(d)!r}, 'robustlab train (test)').acquire(); print('held', flush=True); time.sleep(60)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(d)
        code, err = run_cli(["eval", str(d), "--max-samples", "5"], capsys)
        assert code == 2 and f"pid {holder.pid}: robustlab train (test)" in err
        assert tree(d) == before
    finally:
        holder.kill()
        holder.wait()
    with RunLock(d):  # released by the operating system when its holder died
        pass


def test_refused_restart_changes_no_file_and_resume_checks_the_config(run, tmp_path, capsys):
    d = _copy(run, tmp_path / "run")
    before = tree(d)
    code, err = run_cli(["train", "--dataset", "digits", "--method", "trades", "--out", str(d), "--quiet"], capsys)
    assert code == 2 and "already holds a training state" in err
    code, err = run_cli(["train", "--config", str(d / "config.yaml"), "--method", "trades", "--out", str(d), "--resume"], capsys)
    assert code == 2 and "differs from the one this run was started with in method.name" in err, err
    code, err = run_cli(["train", "--config", str(d / "config.yaml"), "--epochs", "1", "--out", str(d), "--resume"], capsys)
    assert code == 2 and "has finished 2 epochs; train.epochs=1 would shorten it" in err, err
    assert tree(d) == before
    code, err = run_cli(["train", "--config", str(d / "config.yaml"), "--epochs", "3", "--out", str(d), "--resume", "--quiet"], capsys)
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in (d / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert ckpt.load_meta(d / "last")["epoch"] == 3


# --- a full disk --------------------------------------------------------------------------------------

def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    out = tmp_path / "run"
    cmd = ["train", "--dataset", "digits", "--epochs", "3", "--out", str(out), "--quiet"]
    calls = {"n": 0}
    real = Path.write_bytes

    def fills_up(self, data):
        if self.suffix == ".safetensors":
            calls["n"] += 1
            if calls["n"] > 4:  # epoch 1 writes model, last, state; epoch 2 fails half-way through its files
                real(self, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", fills_up)
    code, err = run_cli(cmd, capsys)
    assert code == 2 and "no space left on the device" in err and err.count("\n") == 1, err
    assert not list(out.glob(".*tmp*")), "a temporary file was left behind"
    assert ckpt.state_epoch(out / ckpt.STATE_FILE) == 1
    model, meta = ckpt.load_model(out / "last")
    FAULTS["lost_or_mixed"] += meta["epoch"] != 1
    monkeypatch.setattr(Path, "write_bytes", real)
    code, err = run_cli(cmd + ["--resume"], capsys)
    assert code == 0, err
    assert ckpt.state_epoch(out / ckpt.STATE_FILE) == 3


def _tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True).returncode == 0


def test_a_real_full_disk_on_a_small_tmpfs(tmp_path):
    small = make_run_config({"dataset": "digits", "model": {"name": "small_cnn", "width": 8, "hidden": 32}, "train": {"epochs": 1}})
    ref = tmp_path / "ref"
    train_run(small, ref, quiet=True)
    size = sum(p.stat().st_size for p in ref.iterdir()) // 1024
    mnt = tmp_path / "disk"
    if not _tmpfs(mnt, size + size // 2 + 16):
        pytest.skip("mount -t tmpfs is not permitted here (the patched-write test covers the full disk)")
    try:
        out = mnt / "run"
        cmd = robustlab("train", "--dataset", "digits", "--set", "model.width=8", "--set", "model.hidden=32", "--epochs", "4",
                        "--out", str(out), "--quiet")
        proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
        FAULTS["probes"] += 1
        FAULTS["tracebacks"] += "Traceback" in proc.stderr
        assert proc.returncode == 2 and "no space left on the device" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        done = ckpt.state_epoch(out / ckpt.STATE_FILE)
        model, meta = ckpt.load_model(out / "last")
        intact = done >= 1 and meta["epoch"] >= done and not list(out.glob(".*tmp*"))
        FAULTS["lost_or_mixed"] += not intact
        assert intact
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# --- kill -9 at random moments, then the rerun gives the uninterrupted result ------------------------

def _kill_at(cmd: list[str], seconds: float) -> None:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return time.perf_counter() - t0


def _trial(matched: bool) -> None:
    FAULTS["kill_trials"] += 1
    FAULTS["kill_matched"] += matched
    FAULTS["lost_or_mixed"] += not matched


def _train_cmd(out: Path, resume: bool = False) -> list[str]:
    return robustlab("train", "--dataset", "digits", "--method", "pgd_at", "--threat", "linf:0.2", "--epochs", "4",
                     "--set", "method.attack_steps=3", "--out", str(out), "--quiet", *(["--resume"] if resume else []))


def _metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"} for line in (out / "metrics.jsonl").read_text().splitlines()]


def _kill_train_trials(tmp_path: Path, trials: int, seed: int) -> None:
    ref = tmp_path / "ref"
    total = _timed(_train_cmd(ref))
    rng = random.Random(seed)
    for k in range(trials):
        out = tmp_path / f"trial{k}"
        _kill_at(_train_cmd(out), rng.uniform(0.5, total))
        subprocess.run(_train_cmd(out, resume=True), env=ENV, check=True, capture_output=True)
        _trial((out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
               and (out / "last.safetensors").read_bytes() == (ref / "last.safetensors").read_bytes()
               and _metrics(out) == _metrics(ref))
    assert FAULTS["kill_matched"] == FAULTS["kill_trials"]


def _eval_cmd(run: Path, out: Path) -> list[str]:
    return robustlab("eval", str(run), "--suite", "autoattack", "--max-samples", "40", "--batch-size", "8", "--out", str(out), "--quiet")


def _eval_outcome(out: Path) -> tuple:
    d = json.loads((out / "eval.json").read_text())
    samples = dict(np.load(out / "eval_samples.npz"))
    return (d["clean"], d["attacks"], d["stages"], [(f["name"], f["raised"], f["value"]) for f in d["flags"]],
            {k: v.tolist() for k, v in samples.items()})


def _kill_eval_trials(run: Path, tmp_path: Path, trials: int, seed: int) -> None:
    ref = tmp_path / "ref"
    total = _timed(_eval_cmd(run, ref))
    rng = random.Random(seed)
    for k in range(trials):
        out = tmp_path / f"trial{k}"
        _kill_at(_eval_cmd(run, out), rng.uniform(0.5, total))
        subprocess.run(_eval_cmd(run, out), env=ENV, check=True, capture_output=True)
        _trial(_eval_outcome(out) == _eval_outcome(ref) and not list(out.glob("*_state.*")))
    assert FAULTS["kill_matched"] == FAULTS["kill_trials"]


def test_kill_train_at_a_random_moment_and_resume(tmp_path):
    _kill_train_trials(tmp_path, trials=1, seed=1)


def test_kill_eval_autoattack_at_a_random_moment_and_rerun(run, tmp_path):
    _kill_eval_trials(run, tmp_path, trials=1, seed=2)


@pytest.mark.slow
def test_kill_train_five_times(tmp_path):
    _kill_train_trials(tmp_path, trials=5, seed=11)


@pytest.mark.slow
def test_kill_eval_autoattack_five_times(run, tmp_path):
    _kill_eval_trials(run, tmp_path, trials=5, seed=12)


STUDY = """
name: faults
dataset: digits
model: {name: small_cnn, width: 8, hidden: 32}
threat: linf:0.2
train: {epochs: 3}
eval: {suite: quick, max_samples: 60, flags: {max_samples: 30}}
runs:
  - method: standard
  - {method: {name: pgd_at, attack_steps: 3}}
  - {method: {name: trades, attack_steps: 3}}
sections: [robustness]
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _study_outcome(root: Path) -> tuple:
    report = (root / "faults" / "report.md").read_text()
    # the table rows, less the training-time column ("12 s" or "reused" differs between invocations)
    tables = [re.sub(r"\| (\d+ s|reused) \|", "| - |", line) for line in report.splitlines() if line.startswith("|")]
    runs = {label: ((root / "faults" / label / "model.safetensors").read_bytes(), _eval_outcome_of(root / "faults" / label))
            for label in ("standard", "pgd_at", "trades")}
    return tables, runs


def _eval_outcome_of(run_dir: Path) -> tuple:
    d = json.loads((run_dir / "eval.json").read_text())
    return d["clean"], d["attacks"], d["worst_case"], [(f["name"], f["raised"]) for f in d["flags"]]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the orphan check reads /proc")
def test_kill_study_parent_workers_end_and_the_rerun_matches(tmp_path):
    config = tmp_path / "faults.yaml"
    config.write_text(STUDY)

    def cmd(out: Path) -> list[str]:
        return robustlab("study", str(config), "--out", str(out), "--jobs", "2", "--quiet")

    total = _timed(cmd(tmp_path / "ref"))
    rng = random.Random(13)
    for k in range(3):
        out = tmp_path / f"trial{k}"
        proc = subprocess.Popen(cmd(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, total))
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(3)
        orphans = [w for w in workers if _alive(w)]
        for w in orphans:
            os.kill(w, signal.SIGKILL)
        assert not orphans, f"workers {orphans} outlived the killed study"
        subprocess.run(cmd(out), env=ENV, check=True, capture_output=True)
        _trial(_study_outcome(out) == _study_outcome(tmp_path / "ref"))
    assert FAULTS["kill_matched"] == FAULTS["kill_trials"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the orphan check reads /proc")
def test_kill_study_parent_during_torchrun_training_ends_every_rank(tmp_path):
    config = tmp_path / "faults.yaml"
    config.write_text(STUDY.replace("train: {epochs: 3}", "train: {epochs: 40}"))
    proc = subprocess.Popen(robustlab("study", str(config), "--out", str(tmp_path / "out"), "--nproc", "2", "--quiet"),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, ranks = time.time() + 120, []
    while time.time() < deadline and len(ranks) < 2:  # study -> torchrun -> two ranks
        time.sleep(0.5)
        ranks = [r for t in _children(proc.pid) for r in _children(t)]
    assert len(ranks) == 2, "the torchrun ranks did not start"
    launcher = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(5)
    orphans = [p for p in launcher + ranks if _alive(p)]
    for p in orphans:
        os.kill(p, signal.SIGKILL)
    FAULTS["probes"] += 1
    FAULTS["lost_or_mixed"] += bool(orphans)
    assert not orphans, f"processes {orphans} outlived the killed study"
