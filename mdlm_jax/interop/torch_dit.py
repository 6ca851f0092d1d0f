"""A plain-PyTorch DiT / AR backbone with the official MDLM parameter names (SPEC sections 6, 10).

It exists so that exported weights can be checked in PyTorch without the official repository
(no flash-attn, no einops): ``DiT(...).load_state_dict(sd, strict=True)`` accepts exactly the
official ``backbone.state_dict()`` keys (bare names), and ``forward`` gives the raw output-layer
logits in float32. Everything runs in float32; dropout is active only in ``train()`` mode.

This module imports torch at the top; the rest of ``mdlm_jax`` imports it only where torch is
wanted (``modeling_mdlm``, the PyTorch benchmark). It imports nothing beyond torch and the standard
library: ``hf`` exports ship it as the backbone of their remote code (``modeling_mdlm.py``), which
is loaded where mdlm_jax is not installed.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

_FREQ_DIM = 256  # sinusoidal features fed to sigma_map
_MAX_PERIOD = 10000.0
_ROTARY_BASE = 10000.0


def _modulate(x, shift, scale):
    """x (B, L, D) * (1 + scale) + shift, with shift / scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class LayerNorm(nn.Module):
    """Scale-only LayerNorm, eps 1e-5, in float32 (parameter ``weight`` (D,))."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight, None, 1e-5)


class EmbeddingLayer(nn.Module):
    """Token embedding held as a bare (V, D) parameter named ``embedding``."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))

    def forward(self, indices):
        return self.embedding[indices]


class TimestepEmbedder(nn.Module):
    """sigma (B,) -> 256 features [cos, sin] -> Linear -> SiLU -> Linear: (B, C)."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(_FREQ_DIM, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma):
        half = _FREQ_DIM // 2
        freqs = torch.exp(-math.log(_MAX_PERIOD) * torch.arange(half, dtype=torch.float32,
                                                                device=sigma.device) / half)
        args = sigma.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class Rotary(nn.Module):
    """Holds the ``inv_freq`` buffer (d/2,); returns cos, sin (L, d) in the halves layout."""

    def __init__(self, head_dim: int):
        super().__init__()
        inv_freq = 1.0 / (_ROTARY_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, length: int):
        positions = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(positions, self.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()


class Block(nn.Module):
    """Pre-norm block with adaLN-zero (``causal``: the AR block, no adaLN, gates 1)."""

    def __init__(self, dim: int, n_heads: int, cond_dim: int, mlp_ratio: int, dropout: float,
                 causal: bool):
        super().__init__()
        self.n_heads, self.causal = n_heads, causal
        # Registration order fixes the state_dict / parameters() order: keep it official.
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))
        self.dropout = nn.Dropout(dropout)
        if not causal:
            self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)

    def attention(self, h, cos, sin):
        """h (B, L, D) -> (B, L, D); qkv rows are laid out (3, heads, head_dim)."""
        batch, length, dim = h.shape
        qkv = self.attn_qkv(h).view(batch, length, 3, self.n_heads, dim // self.n_heads)
        cos, sin = cos[None, :, None], sin[None, :, None]
        q, k, v = qkv.unbind(2)  # (B, L, H, d) each
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=self.causal)
        return self.attn_out(out.transpose(1, 2).reshape(batch, length, dim))

    def forward(self, x, c, cos, sin):
        if self.causal:
            x = x + self.dropout(self.attention(self.norm1(x), cos, sin))
            return x + self.dropout(self.mlp(self.norm2(x)))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        h = self.attention(_modulate(self.norm1(x), shift1, scale1), cos, sin)
        x = x + gate1[:, None] * self.dropout(h)
        h = self.mlp(_modulate(self.norm2(x), shift2, scale2))
        return x + gate2[:, None] * self.dropout(h)


class FinalLayer(nn.Module):
    """LN -> adaLN (shift, scale; skipped for AR) -> Linear(D, V)."""

    def __init__(self, dim: int, vocab_size: int, cond_dim: int, causal: bool):
        super().__init__()
        self.norm_final = LayerNorm(dim)
        self.linear = nn.Linear(dim, vocab_size)
        if not causal:
            self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)

    def forward(self, x, c):
        x = self.norm_final(x)
        if c is not None:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
            x = _modulate(x, shift, scale)
        return self.linear(x)


class DiT(nn.Module):
    """MDLM's DiT (``causal=True``: the AR baseline) with the official ``state_dict`` layout.

    ``forward(indices (B, L) int, sigma (B,) float or None) -> logits (B, L, V) float32`` (raw,
    no SUBS). With ``time_conditioning=False`` sigma is zeroed, not removed, as in the official
    code; ``causal`` ignores sigma. Fields mirror ``mdlm_jax.models.DiT``.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 768, cond_dim: int = 128, n_blocks: int = 12,
                 n_heads: int = 12, mlp_ratio: int = 4, dropout: float = 0.1, causal: bool = False,
                 time_conditioning: bool = False):
        super().__init__()
        if hidden_size % n_heads or (hidden_size // n_heads) % 2:
            raise ValueError(f"n_heads ({n_heads}) must divide hidden_size ({hidden_size}) into an even "
                             "head_dim (rotary needs it).")
        self.causal, self.time_conditioning = causal, time_conditioning
        self.vocab_embed = EmbeddingLayer(hidden_size, vocab_size)
        if not causal:
            self.sigma_map = TimestepEmbedder(cond_dim)
        self.rotary_emb = Rotary(hidden_size // n_heads)
        self.blocks = nn.ModuleList(Block(hidden_size, n_heads, cond_dim, mlp_ratio, dropout, causal)
                                    for _ in range(n_blocks))
        self.output_layer = FinalLayer(hidden_size, vocab_size, cond_dim, causal)
        self.reset_parameters()

    @classmethod
    def from_config(cls, model_config: Any) -> "DiT":
        """Builds from a ``mdlm_jax.models.DiT`` or a mapping with the same field names."""
        names = ("vocab_size", "hidden_size", "cond_dim", "n_blocks", "n_heads", "mlp_ratio", "dropout",
                 "causal", "time_conditioning")
        if isinstance(model_config, Mapping):
            return cls(**{k: model_config[k] for k in names if k in model_config})
        return cls(**{k: getattr(model_config, k) for k in names})

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official init: U(+-1/sqrt(fan_in)) for the embedding (fan_in = D) and every Linear
        weight and bias; LayerNorm scales 1; adaLN and the output linear exactly zero."""
        embedding = self.vocab_embed.embedding
        nn.init.uniform_(embedding, -1 / math.sqrt(embedding.shape[1]), 1 / math.sqrt(embedding.shape[1]))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1 / math.sqrt(module.in_features)
                nn.init.uniform_(module.weight, -bound, bound)
                if module.bias is not None:
                    nn.init.uniform_(module.bias, -bound, bound)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
        zeroed = [self.output_layer.linear]
        if not self.causal:
            zeroed += [b.adaLN_modulation for b in self.blocks] + [self.output_layer.adaLN_modulation]
        for module in zeroed:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, indices: torch.Tensor, sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.vocab_embed(indices)
        if self.causal:
            c = None
        else:
            if sigma is None:
                raise ValueError("DiT(causal=False) needs sigma of shape (batch,).")
            sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
            sigma = sigma.expand(indices.shape[0])
            if not self.time_conditioning:
                sigma = torch.zeros_like(sigma)
            c = F.silu(self.sigma_map(sigma))
        cos, sin = self.rotary_emb(indices.shape[1])
        for block in self.blocks:
            x = block(x, c, cos, sin)
        return self.output_layer(x, c).float()
