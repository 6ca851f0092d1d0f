"""Hugging Face BERT directories <-> (``BertConfig``, Flax params) (SPEC section 15).

Reads ``config.json`` plus ``model.safetensors`` (or a sharded ``model.safetensors.index.json``)
or ``pytorch_model.bin`` of a ``BertForMaskedLM``, ``BertForPreTraining`` or bare ``BertModel``;
writes ``BertForMaskedLM`` directories that ``transformers.BertForMaskedLM.from_pretrained`` loads
with no missing or unexpected keys. Only local paths: nothing is fetched from a hub.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax
import numpy as np

from mdlm_jax.interop.params import as_numpy
from mdlm_jax.models import bert, vocab

CONFIG = "config.json"
SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
# What transformers' BERT tokenizers read from a model directory.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _read_weights(directory: pathlib.Path) -> tuple[dict[str, np.ndarray], str]:
    """({name: array}, the file read) from the first of the weight files present."""
    from safetensors.numpy import load_file

    if (directory / SAFETENSORS).is_file():
        return load_file(directory / SAFETENSORS), SAFETENSORS
    if (directory / SAFETENSORS_INDEX).is_file():
        shards = sorted(set(json.loads((directory / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(directory / shard).items()}, SAFETENSORS_INDEX
    if (directory / TORCH_BIN).is_file():
        import torch

        state_dict = torch.load(directory / TORCH_BIN, map_location="cpu", weights_only=True)
        return {k: as_numpy(v) for k, v in state_dict.items()}, TORCH_BIN
    raise FileNotFoundError(f"No BERT weights in {directory}: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or "
                            f"{TORCH_BIN}.")


def load_hf_bert(path, *, rng=None) -> tuple[bert.BertConfig, dict, dict]:
    """A local HF BERT directory -> (config, float32 numpy params, info).

    A checkpoint without the MLM head (a bare ``BertModel``) gets one initialised as HF does
    (``bert.init_mlm_head`` with ``rng``, default ``jax.random.key(0)``). info: ``architecture``
    (config.json's, else what the tensors show), ``weights`` (the file read) and ``initialised``
    (the HF names of the params that did not come from the checkpoint).
    """
    directory = pathlib.Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"BERT directory {directory} does not exist (a local HF BERT directory with "
                                f"{CONFIG} and {SAFETENSORS} or {TORCH_BIN} is required).")
    config_file = directory / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"No {CONFIG} in {directory}.")
    hf = json.loads(config_file.read_text())
    config = bert.BertConfig.from_hf(hf)
    tensors, weights = _read_weights(directory)
    params = bert.params_from_hf(tensors, config)
    initialised = []
    if "cls" not in params:
        params["cls"] = bert.init_mlm_head(config, jax.random.key(0) if rng is None else rng)
        initialised = [n for n in bert.hf_names(config) if n.startswith("cls.")]
    architecture = (hf.get("architectures") or ["BertModel" if initialised else "BertForMaskedLM"])[0]
    return config, params, {"architecture": architecture, "weights": weights, "initialised": initialised}


def save_hf_bert(directory, config: bert.BertConfig, params) -> None:
    """Writes ``directory/config.json`` and ``directory/model.safetensors`` as a ``BertForMaskedLM``."""
    from safetensors.numpy import save_file

    tensors = bert.params_to_hf(params, config)
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, SAFETENSORS), metadata={"format": "pt"})
    with open(os.path.join(directory, CONFIG), "w") as f:
        json.dump(config.to_hf(), f, indent=2, sort_keys=True)


def read_pooler(path) -> dict | None:
    """A checkpoint's pooler (``[bert.]pooler.dense``, which BertModel and BertForPreTraining have
    and BertForMaskedLM does not) as Flax Dense params {kernel (D, D), bias (D,)}, or None."""
    tensors, _ = _read_weights(pathlib.Path(path))
    for prefix in ("bert.pooler.dense.", "pooler.dense."):
        if prefix + "weight" in tensors:
            return {"kernel": np.asarray(tensors[prefix + "weight"], np.float32).T,
                    "bias": np.asarray(tensors[prefix + "bias"], np.float32)}
    return None


def model_fields(path) -> dict:
    """The ``cfg.model`` fields of a HF BERT directory's config.json (for ``model.pretrained``):
    hidden_size, n_blocks, n_heads, dropout and the ``model.bert`` ones. Raises as ``load_hf_bert``."""
    config_file = pathlib.Path(path) / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"model.pretrained {path}: no {CONFIG} there (a local HF BERT directory is expected).")
    c = bert.BertConfig.from_hf(json.loads(config_file.read_text()))
    if c.hidden_dropout_prob != c.attention_probs_dropout_prob:
        raise ValueError(f"model.pretrained {path}: hidden_dropout_prob {c.hidden_dropout_prob} differs from "
                         f"attention_probs_dropout_prob {c.attention_probs_dropout_prob}; model.dropout sets both.")
    return dict(hidden_size=c.hidden_size, n_blocks=c.num_hidden_layers, n_heads=c.num_attention_heads,
                dropout=c.hidden_dropout_prob,
                bert=dict(intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
                          type_vocab_size=c.type_vocab_size, layer_norm_eps=c.layer_norm_eps))


def load_pretrained(path, model: bert.Bert) -> dict:
    """The params of ``model`` (its vocabulary padded, ``models.vocab``) from a HF BERT directory (a
    bare BertModel's head initialised as HF does), after checking the directory describes
    ``model``'s architecture and vocabulary."""
    config, params, _ = load_hf_bert(path)
    if config.vocab_size != model.config.vocab_size:
        raise ValueError(f"model.pretrained {path} has vocab_size {config.vocab_size}, but the data tokenizer gives "
                         f"{model.config.vocab_size}: use its tokenizer (data.tokenizer='bert-base-uncased' with "
                         "data.tokenizer_path set to the model's directory).")
    theirs, ours = dataclasses.asdict(config), dataclasses.asdict(model.config)
    differ = [f"{k}: {theirs[k]} there, {ours[k]} here" for k in ours if k != "pad_token_id" and theirs[k] != ours[k]]
    if differ:
        raise ValueError(f"model.pretrained {path} describes another architecture than the experiment's model "
                         f"({'; '.join(differ)}); leave the model fields to model.pretrained.")
    return vocab.pad_params(params, model)
