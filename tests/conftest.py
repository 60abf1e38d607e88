"""Shared fixtures. Tests run single-threaded: tiny models are faster that way and results are
bit-for-bit reproducible."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from robustlab import data

    return data.load("digits")


@pytest.fixture
def tiny_cnn():
    from robustlab import models

    torch.manual_seed(0)
    return models.create("small_cnn", 10, 1, 8, width=8, hidden=32)


@pytest.fixture(scope="session")
def briefly_trained_cnn(digits):
    """small_cnn after three epochs of standard training on digits (88% clean on the first 40 test points)."""
    import torch.nn.functional as F

    from robustlab import models

    torch.manual_seed(0)
    model = models.create("small_cnn", 10, 1, 8, width=8, hidden=32)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(3):
        order = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(digits.train.x[idx]), digits.train.y[idx]).backward()
            opt.step()
    return model.eval()


class Linear(torch.nn.Module):
    """logits = W x + b on flattened images (analytic worst cases are known)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone())
        self.bias = torch.nn.Parameter(bias.clone())
        self.num_classes = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


@pytest.fixture
def linear_model():
    def make(num_classes: int = 2, dim: int = 16, seed: int = 0, dtype=torch.float32) -> Linear:
        g = torch.Generator().manual_seed(seed)
        return Linear(torch.randn(num_classes, dim, generator=g, dtype=dtype), torch.randn(num_classes, generator=g, dtype=dtype))

    return make


def pytest_terminal_summary(terminalreporter):
    """The fault suite's counts, when it ran (tests/test_faults.py; quoted in docs/faults.md)."""
    import sys

    faults = getattr(sys.modules.get("test_faults"), "FAULTS", None)
    if faults and faults["probes"] + faults["kill_trials"]:
        terminalreporter.write_line(
            f"fault suite: {faults['probes']} bad-input and concurrency probes, {faults['tracebacks']} tracebacks (goal 0); "
            f"{faults['lost_or_mixed']} runs whose data was lost or mixed (goal 0); "
            f"{faults['kill_matched']} of {faults['kill_trials']} kill -9 trials matched the uninterrupted result (goal all)")
