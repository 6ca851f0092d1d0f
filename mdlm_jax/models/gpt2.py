"""GPT-2 in Flax Linen, the evaluator for generative perplexity (SPEC section 8).

Pre-LN decoder: ``x = wte[tokens] + wpe[positions]``; per block
``x = x + attn(LN1(x))``, ``x = x + mlp(LN2(x))`` with causal softmax(q k^T / sqrt(d)) v and
``mlp = Dense(D, 4D) -> GELU(tanh) -> Dense(4D, D)``; ``logits = LN_f(x) @ wte^T`` (tied).
LayerNorms have a bias and eps 1e-5; every Dense has a bias. The parameter tree mirrors the
Hugging Face names (``h_0/attn/c_attn/kernel`` is ``h.0.attn.c_attn.weight``), and HF's Conv1D
stores its weight as (in, out), which is already a Flax kernel: no transposes when loading.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

Dtype = Any

# HF config flags that change the math, with the only value implemented here.
_FIXED_HF_FLAGS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """The GPT-2 hyperparameters, with Hugging Face's field names (defaults: GPT-2 small)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd, as in HF
    layer_norm_epsilon: float = 1e-5

    @property
    def mlp_dim(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def from_hf(cls, hf: dict) -> GPT2Config:
        """Reads an HF ``config.json`` dict; refuses settings this model does not implement."""
        act = hf.get("activation_function", "gelu_new")
        if act not in _TANH_GELUS:
            raise ValueError(f"GPT-2 activation_function {act!r} is not supported; expected one of {_TANH_GELUS}.")
        for flag, want in _FIXED_HF_FLAGS.items():
            if hf.get(flag, want) != want:
                raise ValueError(f"GPT-2 config sets {flag}={hf[flag]!r}; only {want!r} is supported.")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf.items() if k in fields})


_init = nn.initializers.normal(0.02)  # HF's initializer_range; only used when not loading weights


class CausalSelfAttention(nn.Module):
    config: GPT2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """Shapes: x (B, L, D) -> (B, L, D) in ``dtype``."""
        c = self.config
        b, length, d = x.shape
        qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=_init, name="c_attn")(x)
        # HF splits the 3D outputs as [q | k | v], each laid out (heads, head_dim).
        q, k, v = jnp.split(qkv.reshape(b, length, 3, c.n_head, d // c.n_head), 3, axis=2)
        out = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], is_causal=True)
        return nn.Dense(d, dtype=self.dtype, kernel_init=_init, name="c_proj")(out.reshape(b, length, d))


class MLP(nn.Module):
    config: GPT2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """Shapes: x (B, L, D) -> (B, L, D); GELU is the tanh approximation ("gelu_new")."""
        h = nn.Dense(self.config.mlp_dim, dtype=self.dtype, kernel_init=_init, name="c_fc")(x)
        h = jax.nn.gelu(h, approximate=True)
        return nn.Dense(self.config.n_embd, dtype=self.dtype, kernel_init=_init, name="c_proj")(h)


class Block(nn.Module):
    config: GPT2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """Shapes: x (B, L, D) float32 residual stream -> (B, L, D) float32."""
        eps = self.config.layer_norm_epsilon
        # LayerNorms run in float32 whatever the compute dtype; the residual stream stays float32.
        h = nn.LayerNorm(epsilon=eps, dtype=jnp.float32, name="ln_1")(x)
        x = x + CausalSelfAttention(self.config, self.dtype, name="attn")(h).astype(jnp.float32)
        h = nn.LayerNorm(epsilon=eps, dtype=jnp.float32, name="ln_2")(x)
        return x + MLP(self.config, self.dtype, name="mlp")(h).astype(jnp.float32)


class GPT2(nn.Module):
    """GPT-2 LM: ``model.apply({'params': p}, tokens) -> logits``.

    Params are float32; ``dtype`` is the matmul compute dtype (float32 by default).
    Shapes: tokens (B, L) int with L <= n_positions -> logits (B, L, vocab_size) float32.
    """

    config: GPT2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        c = self.config
        length = tokens.shape[1]
        if length > c.n_positions:
            raise ValueError(f"Sequence length {length} exceeds GPT-2's n_positions={c.n_positions}.")
        wte = nn.Embed(c.vocab_size, c.n_embd, embedding_init=_init, name="wte")
        wpe = nn.Embed(c.n_positions, c.n_embd, embedding_init=_init, name="wpe")
        x = wte(tokens) + wpe(jnp.arange(length))[None]
        for i in range(c.n_layer):
            x = Block(c, self.dtype, name=f"h_{i}")(x)
        x = nn.LayerNorm(epsilon=c.layer_norm_epsilon, dtype=jnp.float32, name="ln_f")(x)
        # Tied output: logits = x @ wte^T, accumulated in float32.
        return jnp.einsum("bld,vd->blv", x.astype(self.dtype), wte.embedding.astype(self.dtype),
                          preferred_element_type=jnp.float32)


def _hf_name(path: tuple[str, ...]) -> str:
    """Flax param path -> HF name: ('h_0', 'ln_1', 'scale') -> 'h.0.ln_1.weight'."""
    *mods, leaf = path
    mods = [m.replace("h_", "h.", 1) if m.startswith("h_") else m for m in mods]
    return ".".join(mods + ["bias" if leaf == "bias" else "weight"])


def _ignored(name: str) -> bool:
    # Causal-mask buffers that older GPT-2 files carry; the mask is built on the fly here.
    return name.endswith((".attn.bias", ".attn.masked_bias"))


def params_from_hf(tensors: dict[str, np.ndarray], config: GPT2Config) -> dict:
    """Maps HF GPT-2 tensors (names with or without ``transformer.``) to a float32 Flax tree.

    Raises KeyError naming a missing or unexpected tensor, ValueError naming a mis-shaped one.
    """
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    variables = jax.eval_shape(lambda: GPT2(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    flat = {}
    for path, spec in traverse_util.flatten_dict(variables["params"]).items():
        name = _hf_name(path)
        if name not in tensors:
            raise KeyError(f"GPT-2 weights lack {name!r} (expected shape {tuple(spec.shape)}).")
        value = np.asarray(tensors.pop(name), np.float32)
        if value.shape != spec.shape:
            raise ValueError(f"GPT-2 weight {name!r} has shape {value.shape}; the config needs {tuple(spec.shape)}.")
        flat[path] = value
    head = tensors.pop("lm_head.weight", None)
    if head is not None and not np.array_equal(head, flat[("wte", "embedding")]):
        raise ValueError("lm_head.weight differs from wte.weight; only the tied GPT-2 head is supported.")
    unexpected = sorted(k for k in tensors if not _ignored(k))
    if unexpected:
        more = " ..." if len(unexpected) > 5 else ""
        raise KeyError(f"Unexpected tensors in the GPT-2 weights: {unexpected[:5]}{more}")
    return traverse_util.unflatten_dict(flat)


def _read_safetensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():  # sharded checkpoints (the larger GPT-2s may be saved this way)
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(directory / shard).items()}
    raise FileNotFoundError(f"No model.safetensors (or model.safetensors.index.json) in {directory}.")


def load_hf_gpt2(path, *, dtype: Dtype = jnp.float32) -> tuple[GPT2, dict]:
    """Loads a local Hugging Face GPT-2 directory (``config.json`` + safetensors) -> (model, params).

    Only reads the local path; nothing is ever fetched from a hub. ``dtype`` is the compute dtype.
    """
    directory = pathlib.Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"GPT-2 directory {directory} does not exist (a local path is required).")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"No config.json in {directory}.")
    config = GPT2Config.from_hf(json.loads(config_file.read_text()))
    return GPT2(config, dtype=dtype), params_from_hf(_read_safetensors(directory), config)
