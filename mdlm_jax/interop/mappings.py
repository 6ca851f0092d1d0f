"""PyTorch layouts by backbone: ``model.name`` -> the functions that move its parameters to and
from a PyTorch ``state_dict``. The interop CLI looks the model up here, so a new backbone adds its
layout with one ``register_mapping`` line (the BERT backbone, for example, maps to Hugging Face's
``BertForMaskedLM`` names)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from mdlm_jax.interop import params as dit_params


class TorchMapping(NamedTuple):
    """``from_torch(state_dict, model) -> params``; ``to_torch(params, model) -> {name: array}``;
    ``check(params, model, where)`` raises ValueError naming a missing, unexpected or misshaped
    parameter. ``model`` is the Flax module the config builds."""

    from_torch: Callable[[Mapping[str, Any], Any], dict]
    to_torch: Callable[[Mapping, Any], dict]
    check: Callable[..., None]


MAPPINGS: dict[str, TorchMapping] = {}


def register_mapping(model_name: str, mapping: TorchMapping) -> None:
    if model_name in MAPPINGS:
        raise ValueError(f"model {model_name!r} already has a PyTorch mapping.")
    MAPPINGS[model_name] = mapping


def mapping_for(model_name: str) -> TorchMapping:
    """The PyTorch layout of the backbone ``model.name``; a ValueError naming the registered ones."""
    if model_name not in MAPPINGS:
        raise ValueError(f"model.name {model_name!r} has no PyTorch layout (registered: {sorted(MAPPINGS)}); "
                         "add one with mdlm_jax.interop.register_mapping.")
    return MAPPINGS[model_name]


register_mapping("dit", TorchMapping(dit_params.params_from_torch, dit_params.params_to_torch,
                                     dit_params.check_params))
