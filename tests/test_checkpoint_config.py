import json

import pytest
import torch

from robustlab import checkpoint as ckpt
from robustlab import models
from robustlab.config import load_study, make_run_config, study_runs
from robustlab.errors import RobustlabError


def test_model_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    m = models.create("resnet20", 10, 3, 16, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), width=1)
    m.train()
    m(torch.rand(8, 3, 16, 16))  # move BN running stats away from their init
    m.eval()
    ckpt.save_model(tmp_path / "model", m, {"epoch": 3, "threat": "linf:8/255"})
    loaded, meta = ckpt.load_model(tmp_path)
    assert meta["arch"] == "resnet20" and meta["epoch"] == 3 and meta["mean"] == pytest.approx([0.4, 0.5, 0.6])
    a, b = m.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(m(x), loaded(x))
    assert not (tmp_path / "model.safetensors.tmp").exists()


def test_architecture_mismatch_is_a_clear_error(tmp_path):
    ckpt.save_model(tmp_path / "model", models.create("small_cnn", 10, 1, 8, width=8), {})
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["arch_kwargs"] = {"width": 16}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(RobustlabError, match="do not match the architecture.*shape mismatch"):
        ckpt.load_model(tmp_path)


def test_missing_checkpoint_names_the_expected_files(tmp_path):
    with pytest.raises(RobustlabError, match="model.safetensors"):
        ckpt.load_model(tmp_path)


def test_train_state_round_trip(tmp_path):
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.randn(3)
    opt.step()
    tree = {"optimizer": opt.state_dict(), "gen": torch.Generator().manual_seed(5).get_state(), "epoch": 4,
            "history": [{"a": 1.5}], "nested": (1, "x", None)}
    ckpt.save_state(tmp_path / "s.safetensors", tree)
    back = ckpt.load_state(tmp_path / "s.safetensors")
    assert back["epoch"] == 4 and back["history"] == [{"a": 1.5}] and back["nested"] == (1, "x", None)
    assert torch.equal(back["gen"], tree["gen"])
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.randn(3))], lr=0.5, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert opt2.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("data,needle", [
    ({"trian": {}}, "did you mean 'train'"),
    ({"train": {"epoch": 3}}, "did you mean 'epochs'"),
    ({"train": {"optimizer": {"name": "rmsprop"}}}, "rmsprop"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"threat": "linf:8"}, "8px"),
])
def test_bad_run_configs(data, needle):
    with pytest.raises(RobustlabError) as e:
        make_run_config(data)
    assert needle in str(e.value)


def test_study_merges_runs_over_base_and_applies_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nthreat: linf:0.1\ntrain: {epochs: 7, batch_size: 32}\nmethod: {name: trades, beta: 3}\n"
        "runs:\n  - {label: a}\n  - {label: b, method: {beta: 1}}\n  - {label: c, method: pgd_at, train: {epochs: 2}}\n"
    )
    runs = {label: cfg for label, _, cfg in study_runs(load_study(path, ["train.batch_size=16"]))}
    assert runs["a"].method.options == {"beta": 3} and runs["b"].method.options == {"beta": 1}
    assert runs["c"].method.name == "pgd_at" and runs["c"].method.options == {}
    assert [runs[k].train.epochs for k in "abc"] == [7, 7, 2]
    assert all(r.train.batch_size == 16 for r in runs.values())
    path.write_text("name: s\nruns: [{label: a}, {label: a}]\n")
    with pytest.raises(RobustlabError, match="two runs are labelled 'a'"):
        study_runs(load_study(path))
    path.write_text("name: s\nrunz: []\n")
    with pytest.raises(RobustlabError, match="did you mean 'runs'"):
        load_study(path)
