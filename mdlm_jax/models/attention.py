"""Scaled dot-product attention on each platform's fast kernel, chosen by ``model.attention_impl``.

``None`` (config ''): ``jax.nn.dot_product_attention`` chooses, which in jax 0.10 is XLA's
einsum-softmax-einsum on every platform. 'xla' forces that. 'cudnn' is cuDNN flash attention through
``jax.nn.dot_product_attention`` (CUDA GPUs from Ampere on, bf16 / fp16, head_dim a multiple of 8 up
to 128, or 256 on Hopper; jax raises otherwise). 'splash' is the Pallas TPU splash-attention kernel
(L a multiple of 128); off TPU it runs in Pallas interpret mode, which is exact but orders of
magnitude slower: for tests only. 'chunked' is ``chunked_attention`` (pure JAX, online softmax over
key blocks with a recomputing backward pass: O(L) memory on any platform). 'auto' takes splash on TPU and cuDNN on a capable GPU where their
conditions hold, XLA everywhere else.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from mdlm_jax.models import chunked_attention

ATTENTION_IMPLEMENTATIONS = (None, "xla", "cudnn", "splash", "chunked", "auto")

SPLASH_BLOCK = 128  # the kernel's lane width: block sizes, hence L, must be multiples of it


def _on_cuda_ampere_or_later() -> bool:
    """Whether the default backend is a CUDA GPU (not ROCm: no cuDNN) of compute capability >= 8.0."""
    if jax.default_backend() != "gpu":
        return False
    try:
        from jax.extend import backend
        if "cuda" not in backend.get_backend().platform_version.lower():
            return False
        major = jax.devices()[0].compute_capability.split(".")[0]
        return int(major) >= 8
    except (ImportError, AttributeError, ValueError):  # an API move: take the path that works everywhere
        return False


def _platform() -> str:
    """'tpu', 'cuda' (Ampere or later) or 'other'."""
    if jax.default_backend() == "tpu":
        return "tpu"
    return "cuda" if _on_cuda_ampere_or_later() else "other"


def resolve_attention_impl(implementation: Optional[str], dtype, head_dim: int, seq_len: int,
                           platform: Optional[str] = None) -> Optional[str]:
    """The kernel a config value stands for; only 'auto' is resolved.

    'auto' -> 'splash' on TPU when ``seq_len`` is a multiple of 128; 'cudnn' on a CUDA GPU from
    Ampere on when the dtype is bfloat16 / float16 and head_dim is a multiple of 8 up to 128
    (cuDNN flash attention's range on all those GPUs); else 'xla'. ``platform`` ('tpu', 'cuda',
    'other') overrides the detection (tests).
    """
    if implementation != "auto":
        return implementation
    platform = _platform() if platform is None else platform
    if platform == "tpu" and seq_len % SPLASH_BLOCK == 0:
        return "splash"
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if platform == "cuda" and half and head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return "xla"


def _splash_unsharded(q, k, v, causal: bool):
    """q, k, v (B, L, H, D) -> (B, L, H, D): softmax(q k^T / sqrt(D)) v by the splash kernel."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    _, length, heads, head_dim = q.shape
    block = math.gcd(length, 512)  # larger blocks amortise the per-block overhead; 512 as MaxText
    block_sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                                    block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                                    block_q_dq=block, block_kv_dq=block)
    mask = splash.CausalMask((length, length)) if causal else splash.FullMask((length, length))
    kernel = splash.make_splash_mha(splash.MultiHeadMask([mask] * heads), block_sizes=block_sizes,
                                    head_shards=1, q_seq_shards=1,
                                    interpret=jax.default_backend() != "tpu")
    to_heads = lambda a: jnp.swapaxes(a, 1, 2)  # noqa: E731 (the kernel wants (H, L, D) per example)
    # The kernel does not scale the scores; scaling q first is what jax.nn.dot_product_attention does.
    out = jax.vmap(kernel)(to_heads(q * jnp.asarray(head_dim ** -0.5, q.dtype)), to_heads(k), to_heads(v))
    return to_heads(out).astype(q.dtype)  # the kernel returns float32 for bfloat16 inputs


@functools.lru_cache(maxsize=None)
def _warn_interpret() -> None:  # once per process, not once per block and trace
    logging.warning("attention_impl='splash' off TPU runs the kernel in Pallas interpret mode "
                    "(exact, very slow): meant for tests.")


def splash_attention(q, k, v, causal: bool):
    """q, k, v (B, L, H, D) -> (B, L, H, D) with the Pallas TPU splash kernel.

    A Pallas kernel is opaque to XLA's sharding propagation, so under a mesh (``jax.set_mesh``) it
    runs per shard in ``jax.shard_map``: the batch split over ('data', 'fsdp') and the heads over
    'tensor', each where it divides evenly (otherwise that dimension is replicated).
    """
    length = q.shape[1]
    if length % SPLASH_BLOCK:
        raise ValueError(f"attention_impl='splash' needs the sequence length to be a multiple of "
                         f"{SPLASH_BLOCK}; got L={length}. Use 'xla' or 'auto' for this length.")
    if jax.default_backend() != "tpu":
        _warn_interpret()
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return _splash_unsharded(q, k, v, causal)

    def axes(names, size):
        names = tuple(n for n in names if n in mesh.axis_names)
        return names if names and size % math.prod(mesh.shape[n] for n in names) == 0 else None

    spec = P(axes(("data", "fsdp"), q.shape[0]), None, axes(("tensor",), q.shape[2]), None)
    return jax.shard_map(lambda q, k, v: _splash_unsharded(q, k, v, causal), mesh=mesh,
                         in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)


def dot_product_attention(q, k, v, causal: bool, implementation: Optional[str]):
    """q, k, v (B, L, H, D) -> (B, L, H, D), softmax(q k^T / sqrt(D) [+ causal mask]) v, on the
    kernel ``resolve_attention_impl`` picks for ``implementation``."""
    impl = resolve_attention_impl(implementation, q.dtype, q.shape[-1], q.shape[1])
    if impl == "splash":
        return splash_attention(q, k, v, causal)
    if impl == "chunked":
        return chunked_attention.chunked_attention(q, k, v, causal=causal)
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=impl)
