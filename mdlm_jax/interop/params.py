"""Official PyTorch DiT ``state_dict`` <-> Flax params (SPEC section 10), numpy only (torch tensors
are accepted without importing torch; bfloat16 arrives as ``ml_dtypes.bfloat16``).

torch ``Linear.weight`` is (out, in) and a Flax kernel is (in, out). The fused qkv weight
(3D, D) has rows laid out (3, heads, head_dim); here it is a (D, 3, heads, head_dim) kernel, and
``attn_out`` (D, D) becomes (heads, head_dim, D), so tensor parallelism can split heads.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np

from mdlm_jax.models import vocab
from mdlm_jax.models.dit import DiT

ROTARY_BUFFER = "rotary_emb.inv_freq"


class _Entry(NamedTuple):
    torch_name: str
    path: tuple  # path in the Flax params tree
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]
    shape: Optional[tuple] = None  # the official shape, for entries whose conversion reshapes


def _field(cfg: Any, name: str):
    return cfg[name] if isinstance(cfg, Mapping) else getattr(cfg, name)


def _linear(torch_prefix, path, bias=True):
    entries = [_Entry(f"{torch_prefix}.weight", path + ("kernel",), np.transpose, np.transpose)]
    if bias:
        entries.append(_Entry(f"{torch_prefix}.bias", path + ("bias",), np.asarray, np.asarray))
    return entries


def _norm(torch_prefix, path):
    return [_Entry(f"{torch_prefix}.weight", path + ("scale",), np.asarray, np.asarray)]


def param_table(model_config) -> list[_Entry]:
    """The mapping in ``backbone.parameters()`` order (the official EMA / optimizer order).

    ``model_config``: a ``DiT`` module or a mapping with hidden_size, n_heads, n_blocks, causal.
    """
    dim, heads = int(_field(model_config, "hidden_size")), int(_field(model_config, "n_heads"))
    head_dim = dim // heads
    causal = bool(_field(model_config, "causal"))

    def qkv_to_flax(w):  # (3D, D) -> (D, 3, H, d)
        return w.reshape(3, heads, head_dim, dim).transpose(3, 0, 1, 2)

    def qkv_to_torch(k):  # (D, 3, H, d) -> (3D, D)
        return k.transpose(1, 2, 3, 0).reshape(3 * dim, dim)

    def out_to_flax(w):  # (D_out, H*d) -> (H, d, D_out)
        return w.T.reshape(heads, head_dim, dim)

    def out_to_torch(k):  # (H, d, D_out) -> (D_out, H*d)
        return k.reshape(dim, dim).T

    table = [_Entry("vocab_embed.embedding", ("vocab_embed",), np.asarray, np.asarray)]
    if not causal:
        table += _linear("sigma_map.mlp.0", ("sigma_map", "mlp_0"))
        table += _linear("sigma_map.mlp.2", ("sigma_map", "mlp_2"))
    for i in range(int(_field(model_config, "n_blocks"))):
        b, p = f"blocks.{i}", (f"blocks_{i}",)
        table += _norm(f"{b}.norm1", p + ("norm1",))
        table.append(_Entry(f"{b}.attn_qkv.weight", p + ("attn", "attn_qkv"), qkv_to_flax, qkv_to_torch,
                            (3 * dim, dim)))
        table.append(_Entry(f"{b}.attn_out.weight", p + ("attn", "attn_out"), out_to_flax, out_to_torch,
                            (dim, dim)))
        table += _norm(f"{b}.norm2", p + ("norm2",))
        table += _linear(f"{b}.mlp.0", p + ("mlp", "mlp_0"))
        table += _linear(f"{b}.mlp.2", p + ("mlp", "mlp_2"))
        if not causal:
            table += _linear(f"{b}.adaLN_modulation", p + ("adaLN_modulation",))
    table += _norm("output_layer.norm_final", ("output_layer", "norm_final"))
    table += _linear("output_layer.linear", ("output_layer", "linear"))
    if not causal:
        table += _linear("output_layer.adaLN_modulation", ("output_layer", "adaLN_modulation"))
    return table


def torch_param_names(model_config) -> list[str]:
    """Official parameter names in ``backbone.parameters()`` order (buffers excluded)."""
    return [e.torch_name for e in param_table(model_config)]


def rotary_inv_freq(head_dim: int) -> np.ndarray:
    """The official rotary buffer: 1 / 10000^(arange(0, d, 2) / d), float32 (d/2,)."""
    return (1.0 / (10000 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))).astype(np.float32)


def as_numpy(value) -> np.ndarray:
    """A torch tensor (any device) or array-like -> numpy in its stored dtype; a torch bfloat16
    tensor becomes an ``ml_dtypes.bfloat16`` array (numpy has none; float32 holds it exactly)."""
    if not hasattr(value, "detach"):
        return np.asarray(value)
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
        return value.float().numpy().astype(ml_dtypes.bfloat16)
    return value.numpy()


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {(name[len("backbone."):] if name.startswith("backbone.") else name): as_numpy(value)
            for name, value in state_dict.items()}


def _shape_error(name: str, found: tuple, want: tuple, sd: Mapping[str, np.ndarray], dim: int) -> ValueError:
    """A reshaping entry's shape differs from the config's: the embedding tells the checkpoint's
    hidden size, when that is what differs."""
    embedding = sd["vocab_embed.embedding"]
    if embedding.ndim == 2 and embedding.shape[1] != dim:
        found_dim = embedding.shape[1]
        fix = (f"the checkpoint's hidden size is {found_dim} (vocab_embed.embedding is {embedding.shape}): set "
               f"hidden_size={found_dim} in the model config (--config.model.hidden_size={found_dim})")
    else:
        fix = (f"the rest of the checkpoint fits hidden_size {dim}, so this tensor is corrupt or from another "
               "architecture")
    return ValueError(f"{name} has shape {found} but the model config expects {want}: {fix}.")


def _check_rotary(inv_freq: np.ndarray, dim: int, heads: int) -> None:
    """``inv_freq`` (d/2,) against the table for head_dim d = dim / heads, at the precision it was
    stored in (a bfloat16 checkpoint rounds the float32 table to 8 significant bits)."""
    want = rotary_inv_freq(dim // heads)
    if inv_freq.shape != want.shape:
        found_head_dim = 2 * inv_freq.shape[0] if inv_freq.ndim == 1 else 0
        if found_head_dim and dim % found_head_dim == 0:
            found_heads = dim // found_head_dim
            fix = (f"the checkpoint has head_dim {found_head_dim}, i.e. n_heads={found_heads} at hidden_size {dim}: "
                   f"set n_heads={found_heads} in the model config (--config.model.n_heads={found_heads})")
        else:
            fix = f"no head count splits hidden_size {dim} into that head_dim: it is not an MDLM DiT of this width"
        raise ValueError(f"{ROTARY_BUFFER} has shape {inv_freq.shape} but the model config (hidden_size {dim}, "
                         f"n_heads {heads}) expects {want.shape}: {fix}.")
    try:
        resolution = float(ml_dtypes.finfo(inv_freq.dtype).eps)
    except ValueError as err:
        raise ValueError(f"{ROTARY_BUFFER} has dtype {inv_freq.dtype}; expected a floating-point table.") from err
    # float32 tables from other code may differ in the last bits, hence at least 1e-5.
    if not np.allclose(inv_freq.astype(np.float32), want, rtol=max(resolution, 1e-5), atol=0):
        raise ValueError(f"{ROTARY_BUFFER} ({inv_freq.dtype}) does not match 10000^(-arange(0, d, 2) / d) for "
                         f"head_dim {dim // heads}: the checkpoint uses another rotary base.")


def params_from_torch(state_dict: Mapping[str, Any], model_config) -> dict:
    """Official DiT/AR ``state_dict`` (bare or ``backbone.``-prefixed names; torch tensors or numpy
    arrays in any float dtype, bfloat16 included) -> Flax params tree, float32. Files hold the real
    vocabulary rows; for a ``DiT`` whose ``vocab_multiple`` pads them the tree is padded with zeros
    (``mdlm_jax.models.vocab``).

    Raises ValueError listing missing or unexpected keys, or naming a parameter whose shape does
    not match the config (with both shapes and the config field to change), or a rotary table
    from another base.
    """
    sd = _strip_prefix(state_dict)
    table = param_table(model_config)
    expected = {e.torch_name for e in table}
    missing = sorted(expected - set(sd))
    extra = sorted(set(sd) - expected - {ROTARY_BUFFER})
    if missing or extra:
        raise ValueError(f"state_dict does not match the model config: missing keys {missing}, "
                         f"unexpected keys {extra}.")
    dim, heads = int(_field(model_config, "hidden_size")), int(_field(model_config, "n_heads"))
    params: dict = {}
    for entry in table:
        value = sd[entry.torch_name]
        if entry.shape is not None and value.shape != entry.shape:
            raise _shape_error(entry.torch_name, value.shape, entry.shape, sd, dim)
        node = params
        for key in entry.path[:-1]:
            node = node.setdefault(key, {})
        node[entry.path[-1]] = entry.to_flax(value.astype(np.float32))
    # A head count change keeps every weight's shape: only the rotary table tells.
    if ROTARY_BUFFER in sd:
        _check_rotary(sd[ROTARY_BUFFER], dim, heads)
    if isinstance(model_config, DiT):
        params = vocab.pad_params(params, model_config)
    check_params(params, model_config)
    return params


def params_to_torch(params: Mapping, model_config, *, include_buffers: bool = True) -> dict[str, np.ndarray]:
    """Flax params -> official ``state_dict`` (bare names, float32 numpy) in ``state_dict`` order.

    ``include_buffers`` adds ``rotary_emb.inv_freq``, which torch registers just before the blocks.
    A ``DiT``'s padded vocabulary rows are left out (the official shapes hold the real ones).
    """
    if isinstance(model_config, DiT):
        params = vocab.unpad_params(params, model_config)
    out: dict[str, np.ndarray] = {}
    dim, heads = int(_field(model_config, "hidden_size")), int(_field(model_config, "n_heads"))
    for entry in param_table(model_config):
        if include_buffers and entry.torch_name.startswith("blocks.0.") and ROTARY_BUFFER not in out:
            out[ROTARY_BUFFER] = rotary_inv_freq(dim // heads)
        node = params
        for key in entry.path:
            node = node[key]
        out[entry.torch_name] = np.ascontiguousarray(entry.to_torch(np.asarray(node, np.float32)))
    return out


def _listed(names: list, head: int = 8) -> str:
    return str(names[:head])[:-1] + (f", ... ({len(names) - head} more)]" if len(names) > head else "]")


def check_params(params: Mapping, model_config, where: str = "") -> None:
    """Raises ValueError naming missing / unexpected parameters, or the first parameter whose shape
    differs from what the config implies. ``where`` (e.g. the checkpoint step) goes in the message."""
    if isinstance(model_config, DiT):
        model = model_config
    else:
        names = ("vocab_size", "hidden_size", "cond_dim", "n_blocks", "n_heads", "causal")
        model = DiT(**{k: _field(model_config, k) for k in names})
    abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 2), np.int32),
                              jax.ShapeDtypeStruct((1,), np.float32))

    def shapes(tree):
        return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(np.shape(x))
                for p, x in jax.tree_util.tree_leaves_with_path(tree)}

    want, have = shapes(nn.meta.unbox(abstract)["params"]), shapes(params)
    suffix = f" ({where})" if where else ""
    missing, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    if missing or extra:
        raise ValueError(f"The parameters do not match the model config{suffix}: missing {_listed(missing)}, "
                         f"unexpected {_listed(extra)}.")
    for name, shape in want.items():
        if have[name] != shape:
            raise ValueError(f"Parameter {name}: checkpoint shape {have[name]} does not match the config's "
                             f"{shape}{suffix}.")
