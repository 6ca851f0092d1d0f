"""The DiT denoiser of MDLM (SPEC section 6); ``causal=True`` is the AR baseline on the same backbone.

Parameter names mirror the official PyTorch ``state_dict`` (``blocks_0/attn_qkv`` is
``blocks.0.attn_qkv``), which keeps ``mdlm_jax.interop`` a table of reshapes.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdlm_jax.models import attention, layers, vocab
from mdlm_jax.models.registry import register_model
from mdlm_jax.models.layers import Dense, LayerNorm, modulate, partitioned
from mdlm_jax.validation import check_token_ids

# Rematerialisation of each block in the backward pass: 'none' keeps every activation; 'block'
# keeps only each block's input (least memory, about one extra forward); 'dots_saveable' keeps the
# weight matmuls' outputs and recomputes attention scores, softmax, norms and activations (drops
# the (B, H, L, L) tensors, the bulk of the memory at long L, for little recompute).
REMAT_POLICIES = {
    "none": None,
    "block": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class TimestepEmbedder(nn.Module):
    """sigma (B,) -> Linear(256, C) -> SiLU -> Linear(C, C) of the sinusoidal features: (B, C)."""

    cond_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, sigma):
        h = layers.timestep_features(sigma)
        h = Dense(self.cond_dim, ("freq", "cond"), name="mlp_0")(h)
        return Dense(self.cond_dim, (None, "cond"), name="mlp_2")(nn.silu(h))


class Attention(nn.Module):
    """Multi-head self-attention with rotary q/k; qkv laid out (3, heads, head_dim), no biases."""

    n_heads: int
    causal: bool
    implementation: Optional[str]
    dtype: Any

    @nn.compact
    def __call__(self, x, cos, sin):
        dim = x.shape[-1]
        head_dim = dim // self.n_heads
        w_qkv = self.param("attn_qkv", partitioned(layers.torch_linear_init(dim),
                                                   ("embed", None, "heads", "kv")),
                           (dim, 3, self.n_heads, head_dim))
        qkv = layers.flat_dot(x.astype(self.dtype), w_qkv.astype(self.dtype))  # (B, L, 3, H, k)
        heads = ("batch", "length", "heads", "kv")
        q = layers.constrain(layers.apply_rotary(qkv[:, :, 0], cos, sin), heads)
        k = layers.constrain(layers.apply_rotary(qkv[:, :, 1], cos, sin), heads)
        v = layers.constrain(qkv[:, :, 2], heads)
        out = layers.constrain(attention.dot_product_attention(q, k, v, self.causal, self.implementation), heads)
        w_out = self.param("attn_out", partitioned(layers.torch_linear_init(dim),
                                                   ("heads", "kv", "embed")),
                           (self.n_heads, head_dim, dim))
        return layers.flat_dot(out, w_out.astype(self.dtype), contract=2)


class Mlp(nn.Module):
    """Linear(D, rD) -> GELU(tanh) -> Linear(rD, D)."""

    mlp_ratio: int
    dtype: Any

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        h = Dense(self.mlp_ratio * dim, ("embed", "mlp"), dtype=self.dtype, name="mlp_0")(x)
        h = layers.constrain(layers.gelu_tanh(h), ("batch", "length", "mlp"))
        return Dense(dim, ("mlp", "embed"), dtype=self.dtype, name="mlp_2")(h)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-zero modulation (``c is None``: the AR block, gates 1)."""

    n_heads: int
    mlp_ratio: int
    dropout: float
    causal: bool
    attention_impl: Optional[str]
    dtype: Any

    @nn.compact
    def __call__(self, x, c, cos, sin, deterministic: bool):
        dim = x.shape[-1]
        if c is None:
            mod = [None] * 6
        else:
            mod = jnp.split(Dense(6 * dim, ("cond", "embed"), zero_init=True,
                                  name="adaLN_modulation")(c), 6, axis=-1)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod
        drop = nn.Dropout(self.dropout, deterministic=deterministic)

        def branch(h, shift, scale):
            h = h if shift is None else modulate(h, shift, scale)
            return h.astype(self.dtype)

        def residual(x, h, gate):
            h = drop(h.astype(jnp.float32))
            return x + (h if gate is None else gate[:, None] * h)

        h = branch(LayerNorm(name="norm1")(x), shift1, scale1)
        h = Attention(self.n_heads, self.causal, self.attention_impl, self.dtype, name="attn")(h, cos, sin)
        x = residual(x, h, gate1)
        h = branch(LayerNorm(name="norm2")(x), shift2, scale2)
        h = Mlp(self.mlp_ratio, self.dtype, name="mlp")(h)
        return layers.constrain(residual(x, h, gate2), ("batch", "length", "embed"))


class FinalLayer(nn.Module):
    """LN -> adaLN (shift, scale) modulation (skipped for AR) -> Linear(D, V); the projection runs in
    ``dtype`` with float32 accumulation and output, so bfloat16 compute never rounds the logits.
    The kernel has ``rows`` >= V columns (``models.vocab``); the logits are cut back to V."""

    vocab_size: int
    dtype: Any
    rows: int = 0  # 0: vocab_size

    @nn.compact
    def __call__(self, x, c, project: bool = True):
        dim = x.shape[-1]
        x = LayerNorm(name="norm_final")(x)
        if c is not None:
            shift, scale = jnp.split(Dense(2 * dim, ("cond", "embed"), zero_init=True,
                                           name="adaLN_modulation")(c), 2, axis=-1)
            x = modulate(x, shift, scale)
        if not project:
            return x
        logits = Dense(self.rows or self.vocab_size, ("embed", "vocab"), zero_init=True, dtype=self.dtype,
                       out_dtype=jnp.float32, wide=True, name="linear")(x)
        return vocab.cut_logits(layers.constrain(logits, ("batch", "length", "vocab")), self.vocab_size)


def output_head(params) -> dict:
    """The part of the params tree ``project_hidden`` reads: the output layer's projection."""
    return {"output_layer": {"linear": params["output_layer"]["linear"]}}


def project_hidden(model: "DiT", params, hidden):
    """The output layer's projection of ``DiT(return_hidden=True)``'s output, for the fused losses:
    hidden (..., D) -> logits (..., model.padded_vocab) float32, as ``FinalLayer`` computes them but
    not cut to V (the losses exclude the pad columns; ``losses.token_nll``'s ``vocab_size``)."""
    linear = params["output_layer"]["linear"]
    return layers.linear(hidden, linear["kernel"], linear["bias"], model.dtype, jnp.float32, wide=True)


class DiT(nn.Module):
    """MDLM's diffusion transformer; ``apply({'params': p}, tokens, sigma, train=False)``.

    tokens (B, L) int, sigma (B,) float (ignored when ``causal``) -> logits (B, L, V) float32, or
    with ``return_hidden`` the output layer's input (B, L, D) float32 (for the fused loss).
    With ``time_conditioning=False`` sigma is zeroed, not removed: the conditioning vector is the
    constant ``silu(MLP(freq(0)))`` and adaLN stays active, exactly as the official code.
    ``dtype`` is the compute dtype of matmuls; params are always float32; LayerNorm, the residual
    stream and logits are float32. ``attention_impl`` is one of ``attention.ATTENTION_IMPLEMENTATIONS``,
    ``remat`` a key of ``REMAT_POLICIES``, ``scan_blocks`` runs the blocks in one ``lax.scan``; none
    of them changes the parameters or (beyond kernel rounding) the numbers. ``vocab_multiple`` pads
    the embedding and output layer to ``padded_vocab`` rows (``models.vocab``): the numbers stay.
    """

    vocab_size: int
    hidden_size: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    mlp_ratio: int = 4
    dropout: float = 0.1
    causal: bool = False
    time_conditioning: bool = False
    dtype: Any = jnp.float32
    attention_impl: Optional[str] = None
    remat: str = "none"
    scan_blocks: bool = False
    vocab_multiple: int = 1

    @property
    def padded_vocab(self) -> int:
        return vocab.padded_size(self.vocab_size, self.vocab_multiple)

    def __post_init__(self):
        if self.hidden_size % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide hidden_size ({self.hidden_size}).")
        if (self.hidden_size // self.n_heads) % 2:
            raise ValueError(f"head_dim ({self.hidden_size // self.n_heads}) must be even for rotary.")
        if self.attention_impl not in attention.ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"Unknown attention_impl {self.attention_impl!r}; "
                             f"choose one of {attention.ATTENTION_IMPLEMENTATIONS}.")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"Unknown remat {self.remat!r}; choose one of {tuple(REMAT_POLICIES)}.")
        super().__post_init__()

    @nn.compact
    def __call__(self, tokens, sigma=None, train: bool = False, return_hidden: bool = False):
        check_token_ids(tokens, self.vocab_size)
        dim = self.hidden_size
        embedding = self.param("vocab_embed", partitioned(vocab.pad_init(layers.torch_linear_init(dim),
                                                                          self.vocab_size, 0), ("vocab", "embed")),
                               (self.padded_vocab, dim))
        x = layers.constrain(jnp.take(embedding, tokens, axis=0), ("batch", "length", "embed"))
        if self.causal:
            c = None
        else:
            if sigma is None:
                raise ValueError("DiT(causal=False) needs sigma of shape (batch,).")
            sigma = jnp.broadcast_to(jnp.reshape(sigma, (-1,)), tokens.shape[:1]).astype(jnp.float32)
            if not self.time_conditioning:
                sigma = jnp.zeros_like(sigma)
            c = nn.silu(TimestepEmbedder(self.cond_dim, name="sigma_map")(sigma))
        cos, sin = layers.rotary_cos_sin(tokens.shape[1], dim // self.n_heads)
        args = (self.n_heads, self.mlp_ratio, self.dropout, self.causal, self.attention_impl, self.dtype)
        if self.scan_blocks and not self.is_initializing():
            x = self._scanned_blocks(Block(*args, parent=None), x, c, cos, sin, train)
        else:
            block = Block
            if self.remat != "none":
                # Same names, same params: remat only changes what the backward pass stores.
                # static_argnums counts self: 5 is ``deterministic``, a Python bool.
                block = nn.remat(Block, policy=REMAT_POLICIES[self.remat], static_argnums=(5,))
            for i in range(self.n_blocks):
                x = block(*args, name=f"blocks_{i}")(x, c, cos, sin, not train)
        return FinalLayer(self.vocab_size, self.dtype, self.padded_vocab, name="output_layer")(
            x, c, project=not return_hidden)

    def _scanned_blocks(self, block: Block, x, c, cos, sin, train: bool):
        """The blocks as one ``lax.scan`` over their stacked params: XLA compiles one block instead
        of n_blocks (compile time). The parameter tree stays ``blocks_0 ... blocks_{n-1}``; the
        stacking copy is one read of the block weights per step. Dropout masks come from
        fold_in(key, block index): the same distribution as the unrolled loop, not the same draws."""
        stacked = jax.tree_util.tree_map(lambda *p: jnp.stack(p),
                                         *[nn.meta.unbox(self.variables["params"][f"blocks_{i}"])
                                           for i in range(self.n_blocks)])
        key = self.make_rng("dropout") if train and self.dropout > 0 else None

        def body(x, layer):
            params, i = layer
            rngs = {} if key is None else {"dropout": jax.random.fold_in(key, i)}
            return block.apply({"params": params}, x, c, cos, sin, not train, rngs=rngs), None

        if self.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat])
        return jax.lax.scan(body, x, (stacked, jnp.arange(self.n_blocks)))[0]


@register_model("dit")
def build_dit(cfg, *, vocab_size: int, causal: bool) -> DiT:
    """The DiT of ``cfg.model`` (SPEC section 6); ``causal`` for the AR baseline."""
    from mdlm_jax import config as config_lib  # pylint: disable=import-outside-toplevel

    return DiT(vocab_size=vocab_size, dtype=jnp.dtype(cfg.model.dtype), attention_impl=cfg.model.attention_impl or None,
               **dict(config_lib.model_kwargs(cfg), causal=causal))
