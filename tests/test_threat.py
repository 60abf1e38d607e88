import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel


@pytest.mark.parametrize("spec,norm,eps", [
    ("linf:8/255", "linf", 8 / 255), ("linf:8px", "linf", 8 / 255), ("l2:0.5", "l2", 0.5),
    ("linf:0.3", "linf", 0.3), (" LINF : 12px ", "linf", 12 / 255), ("l2:2", "l2", 2.0),
])
def test_parse(spec, norm, eps):
    t = ThreatModel.parse(spec)
    assert t.norm == norm and t.eps == pytest.approx(eps, abs=1e-12)
    assert ThreatModel.parse(str(t)).eps == pytest.approx(t.eps, abs=1e-12)


@pytest.mark.parametrize("spec,needle", [
    ("linf:8", "8px"), ("linf:-0.1", "-0.1"), ("l1:0.1", "l1"), ("linf", "NORM:EPS"), ("linf:1/0", "> 0"),
])
def test_bad_specs_name_the_value(spec, needle):
    with pytest.raises(RobustlabError, match=None) as e:
        ThreatModel.parse(spec)
    assert needle in str(e.value)


def test_l2_eps_above_one_is_fine():
    assert ThreatModel.parse("l2:3.0").eps == 3.0


def test_projection_and_norms():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(5, 3, 4, 4, generator=g)
    for t in (ThreatModel("linf", 0.1), ThreatModel("l2", 0.5)):
        p = t.project(delta)
        assert bool(t.contains(p).all())
        assert torch.allclose(t.norms(p), torch.full((5,), t.eps), atol=1e-6)  # all were outside: land on the sphere
        small = delta * 1e-4
        assert torch.equal(t.project(small), small)  # inside: unchanged
