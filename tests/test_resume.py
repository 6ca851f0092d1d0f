"""Real processes: kill (SIGKILL / SIGTERM) and resume to the bit; two hosts on localhost.

Each run is ``python -m mdlm_jax.main`` in a subprocess with the quick quickstart config.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests_util import REPO, load_config

from mdlm_jax import checkpoint, experiment
from mdlm_jax.tools import pod_check

pytestmark = pytest.mark.slow


def main_cmd(workdir, cache, *overrides, config="configs/quickstart.py:quick"):
    return [sys.executable, "-m", "mdlm_jax.main", f"--config={config}", f"--workdir={workdir}",
            f"--config.data.cache_dir={cache}", "--config.train.eval_every=0", "--config.train.log_every=1",
            *overrides]


def env(devices=1, **extra):
    e = dict(os.environ, XLA_FLAGS=pod_check.fake_devices_flags(devices), JAX_PLATFORMS="cpu",
             PYTHONUNBUFFERED="1")
    e.update(extra)
    return e


def final_state(workdir):
    """(params, ema_params, step, data_state) of the latest checkpoint, on this process's devices."""
    cfg = load_config("quickstart", "quick")
    s = experiment.build(cfg)
    ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
    state, data_state, step = ckpt.restore(s.abstract_state)
    ckpt.close()
    return jax.tree_util.tree_map(np.asarray, jax.device_get((state.params, state.ema_params))), step, data_state


def assert_identical(a, b, rtol=0.0, atol=0.0):
    assert a[1] == b[1] and a[2] == b[2]
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a[0], b[0])


def wait_for_checkpoint(workdir, step, proc, timeout=300):
    path = pathlib.Path(workdir) / "checkpoints" / str(step)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_dir() and proc.poll() is None:
            return
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint {path}")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_and_resume_is_identical_to_a_straight_run(sig, tmp_path):
    """Checkpoints every n steps; the signal lands somewhere after the first one."""
    n, total = 4, 48
    cache = tmp_path / "cache"
    common = [f"--config.train.steps={total}", f"--config.train.checkpoint_every={n}"]
    if sig == signal.SIGTERM:
        common.append("--config.model.dropout=0.1")  # the paper's: its masks must resume exactly too
    subprocess.run(main_cmd(tmp_path / "straight", cache, *common), env=env(), check=True, cwd=REPO)

    proc = subprocess.Popen(main_cmd(tmp_path / "resumed", cache, *common), env=env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for_checkpoint(tmp_path / "resumed", n, proc)
    proc.send_signal(sig)
    out = proc.communicate(timeout=300)[0].decode()
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, out
        assert "SIGTERM" in out
    else:
        assert proc.returncode == -signal.SIGKILL
    subprocess.run(main_cmd(tmp_path / "resumed", cache, *common), env=env(), check=True, cwd=REPO)
    assert_identical(final_state(tmp_path / "resumed"), final_state(tmp_path / "straight"))


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
    cache = tmp_path / "cache"
    common = ["--config.train.steps=3", "--config.train.checkpoint_every=3", "--config.mesh.data=-1"]
    subprocess.run(main_cmd(tmp_path / "one", cache, *common), env=env(devices=8), check=True, cwd=REPO)
    port = free_port()
    procs = [subprocess.Popen(
        main_cmd(tmp_path / "two", cache, *common, f"--config.distributed.coordinator_address=localhost:{port}",
                 "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
                 "--config.distributed.heartbeat_timeout_seconds=30"),
        env=env(devices=4), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    # Same data and steps; only the cross-process reduction order differs (float32 sums, ~3e-8 seen).
    assert_identical(final_state(tmp_path / "two"), final_state(tmp_path / "one"), rtol=1e-5, atol=1e-6)
