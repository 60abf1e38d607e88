"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The test models are tiny: one intra-op thread is as fast and avoids OpenMP spin-waiting when the
    # machine is shared with other jobs. Restored at the end of the session.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
