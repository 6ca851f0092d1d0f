"""Test session setup: 8 fake CPU devices for sharding tests (must precede any jax import)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import gc  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Each test file's compiled programs are dropped after it: the suite's memory stays that of its
    largest file, not the sum of all of them."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process tests (tens of seconds); CI runs them too")
