"""Test session setup: 8 fake CPU devices for sharding tests (must precede any jax import)."""

import os
import tempfile

# The suite compiles many small programs and runs few large ones, so LLVM's optimisation of the
# compiled code costs more time than it saves; the tests that run heavy loops ask for it back per
# jit (``tests_util.OPTIMIZED``). The HLO passes (fusion, sharding) run as in any program.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache per test session, shared by the xdist workers and the processes tests
# start (they inherit the environment): many files compile the same small steps, and each file's
# in-memory caches are dropped after it. The session that creates the directory removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mdlm_jax_test_xla_cache_")
    os.environ["MDLM_JAX_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import gc  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402

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


def pytest_unconfigure(config):
    if os.environ.get("MDLM_JAX_TEST_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process tests (tens of seconds); CI runs them too")
