"""Backbones by registry: ``model.name`` picks one; ``register_model`` adds one.

A builder takes the config, the model vocabulary and whether the objective needs causal attention,
and returns a Linen module with ``apply({'params': p}, tokens (B, L), sigma (B,) or None,
train=False) -> logits (B, L, V) float32`` whose parameters carry logical axis names. One module
and one ``@register_model('name')`` line add a backbone.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

Builder = Callable[..., nn.Module]  # (cfg, *, vocab_size: int, causal: bool) -> module

MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: registers ``builder(cfg, *, vocab_size, causal)`` as ``model.name = name``."""
    def register(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder

    return register


def get_model(cfg, *, vocab_size: int, causal: bool) -> nn.Module:
    """The backbone ``cfg.model.name`` for a vocabulary of ``vocab_size``."""
    name = cfg.model.name
    if name not in MODELS:
        raise ValueError(f"Unknown model.name {name!r}; choose one of {sorted(MODELS)} (or register one with "
                         "mdlm_jax.models.register_model).")
    return MODELS[name](cfg, vocab_size=vocab_size, causal=causal)
