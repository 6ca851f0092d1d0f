"""A pod-sized check without a pod: lower and compile (never run) the train step for a mesh of N fake
CPU devices and report, per device, the parameter, optimizer and temporary memory from the compiled
executable's memory analysis and the collectives per step from its HLO, beside a perfect split.

    python -m mdlm_jax.tools.bench pod --devices 64,256 --sizes small,medium --meshes fsdp,fsdp_tensor

Each device count runs in its own process (``--xla_force_host_platform_device_count=N`` must be
in XLA_FLAGS before jax starts; the other flags set are kept). ``fsdp`` is the mesh (1, N, 1);
``fsdp_tensor`` is (1, N / 4, 4).
The batch is the paper's global batch (512) at L = 1024 with GPT-2's vocabulary (50,258 entries,
held as ``model.vocab_multiple`` pads them: 50,304 rows by default).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import jax
import numpy as np

from mdlm_jax import config as config_lib, parallel
from mdlm_jax.training import optim, task as task_lib

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
MESHES = {"fsdp": lambda n: (1, n, 1), "fsdp_tensor": lambda n: (1, n // 4, 4)}


def _shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded abstract arrays (its shard of each leaf)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape)
        total += math.prod(shape) * leaf.dtype.itemsize
    return total


def _full_bytes(tree) -> int:
    return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def count_collectives(hlo_text: str) -> dict:
    """How many of each collective the compiled (post-SPMD) HLO runs per step."""
    counts = {}
    for name in COLLECTIVES:
        # "all-reduce(" and the async pair's "all-reduce-start(" count once each
        counts[name] = len(re.findall(rf"\b{name}(?:-start)?\(", hlo_text))
    return counts


def compile_report(size: str, mesh_shape: tuple[int, int, int], *, batch: int = 512, seq_len: int = 1024,
                   vocab: int = 50258, dtype: str = "bfloat16", n_blocks: int = 0, scan_blocks: bool = True,
                   vocab_multiple: int | None = None) -> dict:
    """Compiles one train step on the first prod(mesh_shape) devices; returns the per-device table row
    (``n_blocks`` > 0 overrides the size's depth: quick checks). ``scan_blocks`` compiles one block
    inside a loop (``model.scan_blocks``): the same parameter shardings, other temporaries, and a
    compile that finishes at 256 devices on a small host; the collectives of the loop body are then
    counted once, not per block. ``vocab_multiple``: ``model.vocab_multiple`` (None: the default)."""
    cfg = config_lib.default_config()
    config_lib.set_model_size(cfg, size)
    cfg.model.update(dtype=dtype, dropout=0.0, scan_blocks=scan_blocks)
    if vocab_multiple is not None:
        cfg.model.vocab_multiple = vocab_multiple
    if n_blocks:
        cfg.model.n_blocks = n_blocks
    cfg.mesh.update(data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])
    cfg.train.batch_size = batch
    cfg.data.seq_len = seq_len
    n = math.prod(mesh_shape)
    mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:n])
    parallel.check_batch_size(batch, mesh, name="batch")
    task = task_lib.make_task(cfg, vocab, vocab - 1)
    optimizer = optim.make_optimizer(cfg.optim)
    abstract, shardings = task_lib.state_shardings(task, optimizer, mesh, seq_len)
    step = task_lib.make_train_step(task, optimizer, mesh, shardings)
    rows = jax.ShapeDtypeStruct((batch, seq_len), np.int32, sharding=parallel.batch_sharding(mesh))
    batch_spec = {"input_ids": rows, "attention_mask": jax.ShapeDtypeStruct((batch, seq_len), np.float32,
                                                                              sharding=rows.sharding)}
    with jax.set_mesh(mesh):
        compiled = step.lower(abstract, batch_spec).compile()
    memory = compiled.memory_analysis()
    params = _shard_bytes(abstract.params)
    optimizer_bytes = _shard_bytes(abstract.opt_state) + _shard_bytes(abstract.ema_params)
    gib = 2.0**30
    return dict(size=size, devices=n, mesh="x".join(map(str, mesh_shape)), batch=batch, L=seq_len,
                vocab_rows=task.model.padded_vocab, scan=scan_blocks,
                params_gib=params / gib, params_ideal_gib=_full_bytes(abstract.params) / n / gib,
                opt_ema_gib=optimizer_bytes / gib,
                opt_ema_ideal_gib=(_full_bytes(abstract.opt_state) + _full_bytes(abstract.ema_params)) / n / gib,
                temp_gib=memory.temp_size_in_bytes / gib, args_gib=memory.argument_size_in_bytes / gib,
                **{k.replace("-", "_"): v for k, v in count_collectives(compiled.as_text()).items()})


def fake_devices_flags(devices: int) -> str:
    """XLA_FLAGS for ``devices`` fake CPU devices, keeping every other flag already set."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([f"--xla_force_host_platform_device_count={devices}", *kept])


def run_in_subprocess(devices: int, sizes: list[str], meshes: list[str], *, batch: int, seq_len: int,
                      scan_blocks: bool = True, vocab_multiple: int | None = None) -> list[dict]:
    """``compile_report`` for every (size, mesh) on ``devices`` fake CPU devices, in a fresh process."""
    env = dict(os.environ, XLA_FLAGS=fake_devices_flags(devices), JAX_PLATFORMS="cpu")
    kw = f"batch={batch}, seq_len={seq_len}, scan_blocks={scan_blocks}, vocab_multiple={vocab_multiple}"
    code = (f"import json; from mdlm_jax.tools import pod_check as p; "
            f"print('ROWS', json.dumps([p.compile_report(s, p.MESHES[m]({devices}), {kw}) "
            f"for s in {sizes!r} for m in {meshes!r}]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("ROWS ")]
    if out.returncode or not lines:
        raise RuntimeError(f"the {devices}-device compile failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][5:])
