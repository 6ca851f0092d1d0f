"""PyTorch layouts by backbone: ``model.name`` -> the functions that move its parameters to and
from a PyTorch ``state_dict``. The interop CLI looks the model up here, so a new backbone adds its
layout with one ``register_mapping`` line (the BERT backbone, for example, maps to Hugging Face's
``BertForMaskedLM`` names)."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import numpy as np
from flax import traverse_util

from mdlm_jax.interop import hf_bert, params as dit_params
from mdlm_jax.models import bert, vocab


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


def _check_bert(params, model, where: str) -> None:
    """Missing or misshaped params raise in ``params_to_hf``; extra ones are named here."""
    shapes = {p: np.shape(x) for p, x in traverse_util.flatten_dict(nn.meta.unbox(params)).items()}
    for path, axis in vocab.vocab_axes(model).items():
        if path in shapes and shapes[path][axis] != model.padded_vocab:
            raise ValueError(f"{where}: {'/'.join(path)} has {shapes[path][axis]} vocabulary rows; the config's "
                             f"model has {model.padded_vocab} ({model.vocab_size} padded to a multiple of "
                             f"model.vocab_multiple={model.vocab_multiple}).")
    try:
        expected = bert.params_from_hf(bert.params_to_hf(params, model), model)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    extra = set(shapes) - set(traverse_util.flatten_dict(expected))
    if extra:
        raise ValueError(f"{where}: unexpected BERT params {sorted('/'.join(p) for p in extra)[:8]}.")


register_mapping("bert", TorchMapping(bert.params_from_hf, bert.params_to_hf, _check_bert))


class Pretrained(NamedTuple):
    """``model.pretrained`` for one backbone: ``model_fields(path) -> {cfg.model field: value}``
    (the architecture) and ``load(path, model) -> params`` (float32 numpy, ``model``'s tree)."""

    model_fields: Callable[[str], dict]
    load: Callable[[str, Any], dict]


PRETRAINED: dict[str, Pretrained] = {"bert": Pretrained(hf_bert.model_fields, hf_bert.load_pretrained)}


def pretrained_for(model_name: str) -> Pretrained:
    if model_name not in PRETRAINED:
        raise ValueError(f"model.pretrained is supported for model.name {sorted(PRETRAINED)}, not {model_name!r}; "
                         "a DiT starts from train.init_checkpoint (or python -m mdlm_jax.interop import).")
    return PRETRAINED[model_name]


def apply_pretrained_architecture(cfg) -> None:
    """Fills ``cfg.model``'s architecture fields from ``model.pretrained`` (in place), so that the
    run's saved config describes the model without the directory. A directory that is not there
    changes nothing (a saved config already holds the fields; where the weights are needed, the
    loader names the missing directory)."""
    if not os.path.isdir(cfg.model.pretrained):
        return
    fields = dict(pretrained_for(cfg.model.name).model_fields(cfg.model.pretrained))
    nested = {k: fields.pop(k) for k in [k for k, v in fields.items() if isinstance(v, dict)]}
    with cfg.unlocked():
        cfg.model.update(fields)
        for name, values in nested.items():
            cfg.model[name].update(values)
