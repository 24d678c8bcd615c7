"""Shared fixtures: one native build per test session, reproducible hypothesis."""
import pytest
import torch
from hypothesis import settings

from deblurlayers import _native
from deblurlayers.utils import env

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, print_blob=True)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def native_ops():
    """``torch.ops.deblurlayers`` after building the library; a failed build fails the test."""
    if env.backend() == "reference":
        pytest.skip("DEBLURLAYERS_BACKEND=reference")
    if not _native.load():
        pytest.fail("native build failed:\n" + _native.native_state().reason)
    return torch.ops.deblurlayers


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(items):
    """Every torch.compile / nvcc test is `slow` (tracing and code generation take seconds to a
    minute each), besides the tests marked by hand (training runs, DDP, fresh builds)."""
    for item in items:
        if "compile" in item.name:
            item.add_marker(pytest.mark.slow)
