"""BERT in Flax Linen with the Hugging Face ``BertForMaskedLM`` architecture (SPEC section 15).

Post-LN encoder: ``x = LN(word[tokens] + token_type[0] + position[0..L-1])``; per layer
``x = LN(x + attn(x))``, ``x = LN(x + Dense(GELU(Dense(x))))`` with softmax(q k^T / sqrt(d) + m) v,
``m`` = finfo.min on padded keys; GELU is the exact (erf) one; every Dense has a bias. The MLM head
is ``h = LN(GELU(Dense(x)))``, ``logits = h @ word^T + bias`` (the decoder tied to the word
embeddings). No time conditioning: sigma is accepted and ignored.

The parameter tree mirrors the HF names: ``encoder/layer_0/attention/self/query/kernel`` is
``bert.encoder.layer.0.attention.self.query.weight`` (transposed, and laid out (D, heads, head_dim)
as the DiT's qkv, so tensor parallelism splits heads), ``cls/predictions/bias`` is
``cls.predictions.bias``. Uninitialised params follow HF: normal(0.02) weights, zero biases,
LayerNorm ones / zeros.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mdlm_jax.models import vocab
from mdlm_jax.models.layers import add_bias, constrain, flat_dot, partitioned
from mdlm_jax.models.registry import register_model
from mdlm_jax.validation import check_token_ids

Dtype = Any

ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining")
# HF config flags that change the math, with the only value implemented here.
_FIXED_HF_FLAGS = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False,
                   "tie_word_embeddings": True}
# HF tensors that carry no parameter of BertForMaskedLM: buffers, the pooler, the NSP head.
_IGNORED_PREFIXES = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.", "cls.seq_relationship.")
_DECODER = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The BERT hyperparameters with Hugging Face's field names (defaults: bert-base-uncased)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0

    def __post_init__(self):
        if self.hidden_act != "gelu":
            raise ValueError(f"BERT hidden_act {self.hidden_act!r} is not supported; only 'gelu' (the exact erf "
                             "GELU) is: the tanh variants gelu_new / gelu_pytorch_tanh are not.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must divide hidden_size "
                             f"({self.hidden_size}).")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf: dict) -> BertConfig:
        """Reads an HF ``config.json`` dict; refuses settings this model does not implement."""
        model_type = hf.get("model_type")
        if model_type != "bert":
            raise ValueError(f"config.json has model_type {model_type!r}; expected 'bert' (one of {ARCHITECTURES}).")
        other = [a for a in hf.get("architectures") or [] if a not in ARCHITECTURES]
        if other:
            raise ValueError(f"config.json has architectures {other}; supported BERT architectures: {ARCHITECTURES}.")
        for flag, want in _FIXED_HF_FLAGS.items():
            if hf.get(flag, want) != want:
                raise ValueError(f"BERT config sets {flag}={hf[flag]!r}; only {want!r} is supported.")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf.items() if k in fields})

    def to_hf(self) -> dict:
        """The ``config.json`` of a ``BertForMaskedLM`` with these hyperparameters."""
        return {**dataclasses.asdict(self), **_FIXED_HF_FLAGS, "architectures": ["BertForMaskedLM"],
                "model_type": "bert", "initializer_range": 0.02, "dtype": "float32"}


_normal = nn.initializers.normal(0.02)  # HF's initializer_range


def _word_init(pad_token_id):
    """normal(0.02) with the padding row zeroed, as HF's ``nn.Embedding(padding_idx=...)`` init."""
    def init(key, shape, dtype=jnp.float32):
        table = _normal(key, shape, dtype)
        return table if pad_token_id is None else table.at[pad_token_id].set(0)

    return init


def _layer_norm(eps: float, **kwargs):
    # Two-pass variance as torch: the one-pass E[x^2] - E[x]^2 loses digits at eps 1e-12.
    return nn.LayerNorm(epsilon=eps, dtype=jnp.float32, use_fast_variance=False,
                        scale_init=partitioned(nn.initializers.ones, ("embed",)),
                        bias_init=partitioned(nn.initializers.zeros, ("embed",)), **kwargs)


def tied_logits(hidden, word_embeddings, bias, dtype):
    """hidden (..., D) @ word_embeddings (V, D)^T + bias (V,) -> (..., V) float32, the matmul in
    ``dtype`` with float32 accumulation (the bias gradient a product: ``add_bias``)."""
    logits = jnp.einsum("...d,vd->...v", hidden.astype(dtype), word_embeddings.astype(dtype),
                        preferred_element_type=jnp.float32)
    return add_bias(logits, bias.astype(jnp.float32))


class Dense(nn.Module):
    """x (..., *in) -> x @ kernel (*in, *features) + bias (*features) over the last ``n_in`` axes, in
    ``dtype``; ``names`` are the kernel's logical axes (in..., out...). HF init."""

    features: tuple[int, ...]
    names: tuple
    n_in: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", partitioned(_normal, self.names), x.shape[x.ndim - self.n_in:] + self.features)
        bias = self.param("bias", partitioned(nn.initializers.zeros, self.names[self.n_in:]), self.features)
        y = flat_dot(x.astype(self.dtype), kernel.astype(self.dtype), self.n_in)
        return y + bias.astype(self.dtype)


class Embeddings(nn.Module):
    """tokens (B, L) -> dropout(LN(word + token_type[0] + position[0..L-1])): (B, L, D) float32.
    The word table has ``rows`` >= V rows (``models.vocab``; 0: V), the pad rows zero."""

    config: BertConfig
    rows: int = 0

    def setup(self):
        c = self.config
        init = vocab.pad_init(_word_init(c.pad_token_id), c.vocab_size, 0)
        self.word_embeddings = nn.Embed(self.rows or c.vocab_size, c.hidden_size,
                                        embedding_init=partitioned(init, ("vocab", "embed")))
        self.position_embeddings = nn.Embed(c.max_position_embeddings, c.hidden_size,
                                            embedding_init=partitioned(_normal, (None, "embed")))
        self.token_type_embeddings = nn.Embed(c.type_vocab_size, c.hidden_size,
                                              embedding_init=partitioned(_normal, (None, "embed")))
        self.LayerNorm = _layer_norm(c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def __call__(self, tokens, deterministic: bool, token_type_ids=None):
        types = jnp.zeros_like(tokens) if token_type_ids is None else token_type_ids
        x = self.word_embeddings(tokens) + self.token_type_embeddings(types)
        x = x + self.position_embeddings(jnp.arange(tokens.shape[1]))[None]
        return self.dropout(self.LayerNorm(x), deterministic=deterministic)


class SelfAttention(nn.Module):
    """x (B, L, D), mask_bias (B, 1, 1, L) or None -> softmax(q k^T / sqrt(d) + mask_bias) v:
    (B, L, H, d) in ``dtype`` (scores and softmax float32)."""

    config: BertConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool):
        c = self.config
        heads = (c.num_attention_heads, c.head_dim)
        q, k, v = (Dense(heads, ("embed", "heads", "kv"), dtype=self.dtype, name=n)(x)
                   for n in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(c.head_dim)
        if mask_bias is not None:
            scores = scores + mask_bias
        probs = nn.Dropout(c.attention_probs_dropout_prob)(jax.nn.softmax(scores, axis=-1),
                                                           deterministic=deterministic)
        return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)


class DenseAddNorm(nn.Module):
    """HF's BertSelfOutput / BertOutput: LN(residual + dropout(Dense(h))), (B, L, D) float32."""

    config: BertConfig
    names: tuple
    n_in: int
    dtype: Dtype

    @nn.compact
    def __call__(self, h, residual, deterministic: bool):
        c = self.config
        h = Dense((c.hidden_size,), self.names, self.n_in, self.dtype, name="dense")(h)
        h = nn.Dropout(c.hidden_dropout_prob)(h.astype(jnp.float32), deterministic=deterministic)
        return _layer_norm(c.layer_norm_eps, name="LayerNorm")(residual + h)


class Attention(nn.Module):
    config: BertConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool):
        h = SelfAttention(self.config, self.dtype, name="self")(x, mask_bias, deterministic)
        return DenseAddNorm(self.config, ("heads", "kv", "embed"), 2, self.dtype, name="output")(h, x, deterministic)


class Intermediate(nn.Module):
    config: BertConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x):
        h = Dense((self.config.intermediate_size,), ("embed", "mlp"), dtype=self.dtype, name="dense")(x)
        return jax.nn.gelu(h, approximate=False)


class Layer(nn.Module):
    """One post-LN encoder layer: (B, L, D) float32 -> (B, L, D) float32."""

    config: BertConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool):
        x = Attention(self.config, self.dtype, name="attention")(x, mask_bias, deterministic)
        h = Intermediate(self.config, self.dtype, name="intermediate")(x)
        return DenseAddNorm(self.config, ("mlp", "embed"), 1, self.dtype, name="output")(h, x, deterministic)


class Encoder(nn.Module):
    config: BertConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x, mask_bias, deterministic: bool):
        for i in range(self.config.num_hidden_layers):
            x = Layer(self.config, self.dtype, name=f"layer_{i}")(x, mask_bias, deterministic)
            x = constrain(x, ("batch", "length", "embed"))
        return x


class PredictionHeadTransform(nn.Module):
    """x (B, L, D) -> LN(GELU(Dense(x))): (B, L, D) float32."""

    config: BertConfig
    dtype: Dtype

    @nn.compact
    def __call__(self, x):
        h = Dense((self.config.hidden_size,), (None, "embed"), dtype=self.dtype, name="dense")(x)
        return _layer_norm(self.config.layer_norm_eps, name="LayerNorm")(jax.nn.gelu(h, approximate=False))


class LMPredictionHead(nn.Module):
    """The transform, then (``project``) the tied decoder: logits (B, L, rows) float32."""

    config: BertConfig
    dtype: Dtype
    rows: int = 0  # the padded vocabulary (models.vocab); 0: V

    @nn.compact
    def __call__(self, x, word_embeddings, project: bool = True):
        rows = self.rows or self.config.vocab_size
        bias = self.param("bias", partitioned(nn.initializers.zeros, ("vocab",)), (rows,))
        h = PredictionHeadTransform(self.config, self.dtype, name="transform")(x)
        return tied_logits(h, word_embeddings, bias, self.dtype) if project else h


class OnlyMLMHead(nn.Module):
    """HF's ``cls`` module of BertForMaskedLM (it holds ``predictions``)."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    rows: int = 0

    @nn.compact
    def __call__(self, x, word_embeddings, project: bool = True):
        return LMPredictionHead(self.config, self.dtype, self.rows, name="predictions")(x, word_embeddings, project)


class Bert(nn.Module):
    """BertForMaskedLM; ``apply({'params': p}, tokens, sigma=None, train=False)``.

    tokens (B, L) int with L <= max_position_embeddings, attention_mask (B, L) of 1 (attend) / 0
    (padding key) or None (all ones) -> logits (B, L, V) float32, or with ``return_hidden`` the MLM
    head's transformed state (B, L, D) float32 (the tied projection's input; ``project_hidden``).
    ``encode`` (``apply(..., method=Bert.encode)``) is BertModel's last hidden state (B, L, D).
    ``dtype`` is the matmul compute dtype; params, LayerNorms, the residual stream, attention
    softmax and logits are float32. Dropout runs only with ``train`` (rng 'dropout').
    ``vocab_multiple`` pads the word table and decoder bias to ``padded_vocab`` rows
    (``models.vocab``; interop reads and writes HF's V rows): the numbers stay.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32
    vocab_multiple: int = 1
    uses_attention_mask = True  # the objectives' padding mask reaches attention (the DiT has none)
    time_conditioning = False  # what the samplers ask a backbone: a BERT never sees sigma

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def padded_vocab(self) -> int:
        return vocab.padded_size(self.config.vocab_size, self.vocab_multiple)

    def setup(self):
        self.embeddings = Embeddings(self.config, self.padded_vocab)
        self.encoder = Encoder(self.config, self.dtype)
        self.cls = OnlyMLMHead(self.config, self.dtype, self.padded_vocab)

    def encode(self, tokens, attention_mask=None, train: bool = False, token_type_ids=None):
        """tokens (B, L), attention_mask (B, L) or None, token_type_ids (B, L) (None: all 0, segment A)
        -> the encoder output (B, L, D) float32."""
        c = self.config
        check_token_ids(tokens, c.vocab_size)
        length = tokens.shape[1]
        if length > c.max_position_embeddings:
            raise ValueError(f"Sequence length {length} exceeds BERT's max_position_embeddings="
                             f"{c.max_position_embeddings}.")
        mask_bias = None
        if attention_mask is not None:
            if attention_mask.shape != tokens.shape:
                raise ValueError(f"attention_mask has shape {attention_mask.shape}; tokens have {tokens.shape}.")
            # HF's additive mask: finfo.min on padded keys (a row with no key left is uniform).
            keep = attention_mask.astype(jnp.float32)[:, None, None, :]
            mask_bias = (1.0 - keep) * jnp.finfo(jnp.float32).min
        x = self.embeddings(tokens, deterministic=not train, token_type_ids=token_type_ids)
        return self.encoder(x, mask_bias, not train)

    def __call__(self, tokens, sigma=None, train: bool = False, return_hidden: bool = False, attention_mask=None):
        del sigma  # a BERT sees only tokens
        x = self.encode(tokens, attention_mask, train)
        out = self.cls(x, self.embeddings.word_embeddings.embedding, project=not return_hidden)
        return out if return_hidden else vocab.cut_logits(constrain(out, ("batch", "length", "vocab")), self.vocab_size)


def output_head(params) -> dict:
    """The part of the params tree ``project_hidden`` reads: the word table and the decoder bias."""
    return {"embeddings": {"word_embeddings": params["embeddings"]["word_embeddings"]},
            "cls": {"predictions": {"bias": params["cls"]["predictions"]["bias"]}}}


def project_hidden(model: Bert, params, hidden):
    """The tied MLM decoder on ``Bert(return_hidden=True)``'s output, for the fused losses:
    hidden (..., D) -> logits (..., model.padded_vocab) float32, as ``Bert`` computes them but not
    cut to V (the losses exclude the pad columns)."""
    return tied_logits(hidden, params["embeddings"]["word_embeddings"]["embedding"],
                       params["cls"]["predictions"]["bias"], model.dtype)


def init_mlm_head(config: BertConfig, rng) -> dict:
    """Fresh ``cls`` params as HF initialises a missing head (dense normal(0.02), zero biases,
    LayerNorm ones / zeros), float32 numpy."""
    variables = OnlyMLMHead(config).init(rng, jnp.zeros((1, 1, config.hidden_size)), None, project=False)
    return jax.tree_util.tree_map(np.asarray, nn.meta.unbox(variables["params"]))


# ------------------------------------------------------------------------ Hugging Face tensors


def _config_of(config) -> BertConfig:
    return config.config if isinstance(config, Bert) else config


def _shapes(config: BertConfig) -> dict[tuple, tuple]:
    """Flax param path -> shape."""
    variables = jax.eval_shape(lambda: Bert(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    return {p: tuple(s.shape) for p, s in traverse_util.flatten_dict(nn.meta.unbox(variables["params"])).items()}


def _hf_name(path: tuple[str, ...]) -> str:
    """('encoder', 'layer_0', 'output', 'LayerNorm', 'scale') -> 'bert.encoder.layer.0.output.LayerNorm.weight'."""
    *mods, leaf = path
    mods = [m.replace("layer_", "layer.", 1) for m in mods]
    name = ".".join(mods + ["bias" if leaf == "bias" else "weight"])
    return name if path[0] == "cls" else "bert." + name


def _hf_shape(path: tuple[str, ...], shape: tuple) -> tuple:
    """HF's shape of a param: Linear weights are (out, in) with heads flattened, biases flat."""
    if path[-1] == "kernel":
        n_in = 2 if path[-4:-2] == ("attention", "output") else 1
        return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))
    return (math.prod(shape),) if path[-1] == "bias" else shape


def hf_names(config, *, head: bool = True) -> list[str]:
    """The ``BertForMaskedLM`` tensor names (``head=False``: without ``cls.*``), sorted by Flax path."""
    return [_hf_name(p) for p in _shapes(_config_of(config)) if head or p[0] != "cls"]


def _normalise(name: str) -> str:
    """Bare BertModel names gain ``bert.``; legacy LayerNorm gamma / beta (bert-base-uncased's
    files) become weight / bias, as transformers renames them."""
    if name.endswith(".LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith(".LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name if name.startswith(("bert.", "cls.")) else "bert." + name


def _listed(names: list, head: int = 8) -> str:
    return str(names[:head])[:-1] + (f", ... ({len(names) - head} more)]" if len(names) > head else "]")


def params_from_hf(tensors: dict[str, np.ndarray], config) -> dict:
    """HF BERT tensors -> Flax params (float32 numpy).

    Takes a ``BertForMaskedLM`` / ``BertForPreTraining`` state dict (``bert.`` and ``cls.``
    names) or a bare ``BertModel`` one (no prefix). ``position_ids`` buffers, the pooler and the
    NSP head are ignored; ``cls.predictions.decoder.*`` must equal the tensors they are tied to.
    A checkpoint without an MLM head gives a tree without ``cls``: the caller initialises it
    (``init_mlm_head``). Given a ``Bert`` whose ``vocab_multiple`` pads the vocabulary, the word
    table and decoder bias are padded with zero rows (``models.vocab``). Raises ValueError listing
    missing and unexpected tensors and shape mismatches (name, expected, got).
    """
    model, config = config, _config_of(config)
    tensors = {_normalise(k): v for k, v in tensors.items()}
    tensors = {k: v for k, v in tensors.items() if not k.removeprefix("bert.").startswith(_IGNORED_PREFIXES)}
    decoder = {k: np.asarray(tensors.pop(k), np.float32) for k in _DECODER if k in tensors}
    if _DECODER[1] in decoder:
        tensors.setdefault("cls.predictions.bias", decoder[_DECODER[1]])
    head = any(k.startswith("cls.") for k in tensors)
    shapes = {p: s for p, s in _shapes(config).items() if head or p[0] != "cls"}
    expected = {_hf_name(p): p for p in shapes}
    hf_shapes = {n: _hf_shape(p, shapes[p]) for n, p in expected.items()}
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    mismatched = [f"{n}: expected {want}, got {tuple(np.shape(tensors[n]))}"
                  for n, want in hf_shapes.items() if n in tensors and tuple(np.shape(tensors[n])) != want]
    if missing or unexpected or mismatched:
        positions = "bert.embeddings.position_embeddings.weight"
        hint = ""
        if positions in tensors and np.shape(tensors[positions])[0] != config.max_position_embeddings:
            hint = (f" The config's max_position_embeddings={config.max_position_embeddings} does not match the "
                    f"checkpoint's position table of {np.shape(tensors[positions])[0]} rows.")
        raise ValueError(f"BERT weights do not match the config: missing {_listed(missing)}, unexpected "
                         f"{_listed(unexpected)}, shape mismatches {_listed(mismatched)}.{hint}")
    flat = {}
    for name, path in expected.items():
        value = np.asarray(tensors[name], np.float32)
        flat[path] = value.T.reshape(shapes[path]) if path[-1] == "kernel" else value.reshape(shapes[path])
    words = flat[("embeddings", "word_embeddings", "embedding")]
    if _DECODER[0] in decoder and not np.array_equal(decoder[_DECODER[0]], words):
        raise ValueError(f"{_DECODER[0]} differs from bert.embeddings.word_embeddings.weight; only the tied "
                         "BERT decoder is supported.")
    if _DECODER[1] in decoder and not np.array_equal(decoder[_DECODER[1]], flat[("cls", "predictions", "bias")]):
        raise ValueError(f"{_DECODER[1]} differs from cls.predictions.bias; only the tied BERT decoder is supported.")
    params = traverse_util.unflatten_dict(flat)
    return vocab.pad_params(params, model) if isinstance(model, Bert) else params


def params_to_hf(params, config) -> dict[str, np.ndarray]:
    """Flax params (boxed or not) -> ``BertForMaskedLM`` tensors, float32, as ``save_pretrained``
    writes them to safetensors: ``bert.*`` and ``cls.predictions.*`` without the tied
    ``cls.predictions.decoder.*`` duplicates; a padded ``Bert``'s pad rows are left out."""
    if isinstance(config, Bert):
        params = vocab.unpad_params(params, config)
    config = _config_of(config)
    flat = traverse_util.flatten_dict(nn.meta.unbox(params))
    out = {}
    for path, shape in _shapes(config).items():
        if path not in flat:
            raise ValueError(f"params lack {'/'.join(path)} ({_hf_name(path)}); a BertModel without a head needs "
                             "init_mlm_head first.")
        value = np.asarray(flat[path], np.float32)
        if value.shape != shape:
            raise ValueError(f"Parameter {'/'.join(path)} has shape {value.shape}; the config needs {shape}.")
        hf_shape = _hf_shape(path, shape)
        out[_hf_name(path)] = np.ascontiguousarray(value.reshape(hf_shape[::-1]).T if path[-1] == "kernel"
                                                   else value.reshape(hf_shape))
    return out


def bert_config(cfg, vocab_size: int) -> BertConfig:
    """The ``BertConfig`` of an experiment's ``cfg.model`` (``model.pretrained`` has already filled
    these fields from its config.json): hidden_size, n_blocks, n_heads, dropout (hidden and
    attention) and ``model.bert`` (intermediate_size, 0 = mlp_ratio x hidden_size; positions;
    token types; LayerNorm eps)."""
    m, b = cfg.model, cfg.model.bert
    return BertConfig(vocab_size=vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.n_blocks,
                      num_attention_heads=m.n_heads, intermediate_size=b.intermediate_size or m.mlp_ratio * m.hidden_size,
                      hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.dropout,
                      max_position_embeddings=b.max_position_embeddings, type_vocab_size=b.type_vocab_size,
                      layer_norm_eps=b.layer_norm_eps)


@register_model("bert")
def build_bert(cfg, *, vocab_size: int, causal: bool) -> Bert:
    """``model.name = 'bert'``: a bidirectional, time-free denoiser (SPEC section 15)."""
    if causal:
        raise ValueError("model.name 'bert' is bidirectional; the 'ar' objective needs a causal backbone "
                         "(model.name='dit').")
    if cfg.model.time_conditioning:
        raise ValueError("model.name 'bert' sees only tokens (no noise level): set model.time_conditioning=False; "
                         "an objective that needs sigma (sedd) needs model.name='dit'.")
    if cfg.data.seq_len > cfg.model.bert.max_position_embeddings:
        raise ValueError(f"data.seq_len {cfg.data.seq_len} exceeds the BERT's {cfg.model.bert.max_position_embeddings} "
                         "learned positions (model.bert.max_position_embeddings).")
    return Bert(bert_config(cfg, vocab_size), dtype=jnp.dtype(cfg.model.dtype), vocab_multiple=cfg.model.vocab_multiple)
