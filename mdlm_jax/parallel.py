"""Devices: jax.distributed start-up, the ('data', 'fsdp', 'tensor') mesh, logical-axis rules and
the one helper through which batches enter as global arrays.

One parallel code path: ``jax.jit`` with ``NamedSharding`` over this mesh, on 1 CPU, 8 fake
devices, a GPU or a multi-host pod alike.
"""

from __future__ import annotations

import logging
import math
import os

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical parameter / activation axis -> mesh axes. Params are split over fsdp (ZeRO-3 style) and,
# along heads / mlp / vocab, over tensor; the batch over data and fsdp.
LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("cond", None),
    ("freq", None),
)

# Environment variables that mean "this is one process of a multi-process job".
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                "MEGASCALE_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES")


def _wants_distributed(cfg) -> bool:
    mode = str(cfg.enabled).lower()
    if mode in ("true", "1", "yes"):
        return True
    if mode in ("false", "0", "no"):
        return False
    if mode != "auto":
        raise ValueError(f"distributed.enabled must be 'auto', 'true' or 'false', got {cfg.enabled!r}.")
    if cfg.coordinator_address:
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:  # a Cloud TPU pod slice: jax detects the rest itself
        return True
    return any(os.environ.get(k) for k in _CLUSTER_ENV if k != "TPU_WORKER_HOSTNAMES") and \
        int(os.environ.get("SLURM_NTASKS", "2")) > 1


def initialize_distributed(cfg) -> None:
    """Calls ``jax.distributed.initialize`` when the config or the environment asks for it.

    A process that dies stops sending heartbeats; after ``heartbeat_timeout_seconds`` the others
    abort with an error instead of hanging in a collective forever.
    """
    if not _wants_distributed(cfg) or jax.distributed.is_initialized():
        return
    kwargs = dict(initialization_timeout=int(cfg.initialization_timeout),
                  heartbeat_timeout_seconds=int(cfg.heartbeat_timeout_seconds))
    if cfg.coordinator_address:
        kwargs.update(coordinator_address=cfg.coordinator_address, num_processes=int(cfg.num_processes),
                      process_id=int(cfg.process_id))
    if cfg.local_device_ids:
        kwargs["local_device_ids"] = [int(i) for i in str(cfg.local_device_ids).split(",")]
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # the coordinator or a peer never showed up
        raise RuntimeError(
            f"jax.distributed.initialize failed ({e}). Check that every process runs with the same "
            f"coordinator address and num_processes, and that process ids are 0..N-1.") from e
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def mesh_shape(cfg, num_devices: int) -> tuple[int, int, int]:
    """Resolves the config's (data, fsdp, tensor) sizes, at most one of them -1 ("the rest")."""
    sizes = [int(cfg.data), int(cfg.fsdp), int(cfg.tensor)]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes (data, fsdp, tensor) = {tuple(sizes)}: each must be positive, "
                         "and at most one may be -1.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh {tuple(sizes)} does not fit {num_devices} devices: {known} does not "
                             f"divide {num_devices}.")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(sizes)} needs {math.prod(sizes)} devices, "
                         f"but {num_devices} are available; set one size to -1 to take the rest.")
    return tuple(sizes)


def make_mesh(cfg, devices=None) -> Mesh:
    """The ('data', 'fsdp', 'tensor') mesh with Auto axes (what Linen logical partitioning needs)."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices)


def logical_to_sharding(logical_specs, abstract_tree, mesh: Mesh, rules=LOGICAL_RULES):
    """Logical PartitionSpecs -> NamedShardings; an axis that does not divide its dimension is
    replicated instead (e.g. a 50,258-entry vocabulary over 4 tensor shards), with a warning."""
    shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, rules)

    def fit(sharding, leaf):
        spec = list(sharding.spec) + [None] * (len(leaf.shape) - len(sharding.spec))
        for dim, axes in enumerate(spec):
            if axes is None:
                continue
            size = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
            if leaf.shape[dim] % size:
                logging.warning("Replicating a dimension of size %d of a %s array: mesh axes %s (%d) do not "
                                "divide it.", leaf.shape[dim], leaf.shape, axes, size)
                spec[dim] = None
        return NamedSharding(mesh, P(*spec))

    return jax.tree_util.tree_map(fit, shardings, abstract_tree,
                                  is_leaf=lambda x: isinstance(x, NamedSharding))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch dimension split over data x fsdp, replicated over tensor."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, microbatches: int = 1, *, name: str = "Global batch size") -> None:
    """Fails early when the global batch cannot be split over processes, devices and microbatches;
    ``name`` is the config field the message names."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % jax.process_count():
        raise ValueError(f"{name} ({global_batch}) must be divisible by the number of "
                         f"processes ({jax.process_count()}).")
    if global_batch % microbatches or (global_batch // microbatches) % shards:
        raise ValueError(f"{name} ({global_batch}) / microbatches ({microbatches}) must be divisible by the data "
                         f"x fsdp devices ({shards}) of the mesh {dict(mesh.shape)}: use a multiple of "
                         f"{shards * microbatches}.")


def make_global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """Each process's rows (contiguous, in process order) -> global jax arrays of the whole batch."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def all_processes_ok(ok: bool) -> bool:
    """Whether ``ok`` holds on every process (hosts read different files, so one may fail alone)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.array([ok], np.int32))))
