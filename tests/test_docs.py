"""The README cannot rot: its Python block runs as written and trains a real model, and every command
line of its "Command line" block runs, with small settings substituted as `shrink` documents."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustlab import cli
from test_data_loaders import cifar10_files, write_cifar

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"


def test_readme_python_example_runs_and_trains_a_real_model(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "readme"}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "runs/mine/model.safetensors").exists()
    model, ds = scope["model"], scope["ds"]
    with torch.no_grad():
        clean = (model(ds.test.x).argmax(1) == ds.test.y).float().mean().item()
    assert clean >= 0.90, f"the README's model ends at {clean:.1%} clean accuracy"


def readme_command_lines() -> list[str]:
    """The command lines of the README's "Command line" block (comments dropped)."""
    block = README.read_text().split("## Command line", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


SMALL_EVAL = ["--set", "eval.max_samples=20", "--set", "eval.extra_suites=[]", "--set", "eval.flags.max_samples=20"]


def shrink(line: str) -> list[str]:
    """The documented substitutions that make a README line take seconds: 1 epoch (`--epochs`,
    `train.epochs`, analyses' `epochs`), 20 test points (`--max-samples`, `eval.max_samples`, analyses'
    `n`), a study limited to the runs the later lines use (standard, pgd_at, trades) and to its
    robustness table (the paper sections have their own tests), no extra AutoAttack suite (the eval line runs it), one MI critic
    on 200 training points, torchrun with 2 processes on a tiny CIFAR-10 in the official format."""
    argv = shlex.split(line)
    if argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + argv[argv.index("-m"):]
    argv = [re.sub(r"^train\.epochs=\d+$", "train.epochs=1", a) for a in argv]
    for flag, small in (("--epochs", "1"), ("--max-samples", "20"), ("--jobs", "1")):
        if flag in argv:
            argv[argv.index(flag) + 1] = small
    command = argv[argv.index("--") + 1] if "--" in argv else argv[1]
    if command == "train" and "--epochs" not in argv and "train.epochs=1" not in argv:
        argv += ["--set", "train.epochs=1"]
    if command == "study":
        if "--only" not in argv:
            argv += ["--only", "standard,pgd_at,trades"]
        if "train.epochs=1" not in argv:
            argv += ["--set", "train.epochs=1"]
        argv += SMALL_EVAL + ["--set", "sections=[robustness]", "--quiet"]
    if command in ("eval", "sweep") and "--max-samples" not in argv:
        argv += ["--max-samples", "20"]
    if command == "analyze":
        argv += ["--set", "n=20", "--set", "max_samples=20", "--set", "controls=1", "--set", "epochs=1", "--set", "seeds=1",
                 "--set", "max_train=200", "--set", "max_test=20"]
    if command == "vq":
        argv += ["--epochs", "1"]
    return argv


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_readme_command_line_runs(workdir, capsys):
    lines = readme_command_lines()
    assert len(lines) >= 10
    # the study lines first: the eval, sweep and analyze lines use the runs they write
    order = sorted(lines, key=lambda ln: (" study" not in ln, lines.index(ln)))
    for line in order:
        argv = shrink(line)
        if argv[0] == sys.executable:  # torchrun: a subprocess on a tiny CIFAR-10
            write_cifar(workdir / "data", "cifar-10-batches-py", cifar10_files(n_per_batch=20)[0], "py3", None)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTLAB_DATA": str(workdir / "data"),
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
            argv += ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.select.max_samples=8",
                     "--quiet"]
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
            assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
            continue
        code = cli.main(argv[1:])
        err = capsys.readouterr().err
        assert code == 0 and "Traceback" not in err, f"README line failed: {line}\n(ran {shlex.join(argv)})\n{err[-2000:]}"
    assert (workdir / "runs/digits/report_only.md").exists()
    assert (workdir / "runs/digits/pgd_at/robustness_curve.png").exists() or (workdir / "runs/digits/robustness_curve.png").exists()
