"""Official PyTorch DiT ``state_dict`` <-> Flax params (SPEC section 10), numpy only.

torch ``Linear.weight`` is (out, in) and a Flax kernel is (in, out). The fused qkv weight
(3D, D) has rows laid out (3, heads, head_dim); here it is a (D, 3, heads, head_dim) kernel, and
``attn_out`` (D, D) becomes (heads, head_dim, D), so tensor parallelism can split heads.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from mdlm_jax.models.dit import DiT

ROTARY_BUFFER = "rotary_emb.inv_freq"


class _Entry(NamedTuple):
    torch_name: str
    path: tuple  # path in the Flax params tree
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


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
        table.append(_Entry(f"{b}.attn_qkv.weight", p + ("attn", "attn_qkv"), qkv_to_flax, qkv_to_torch))
        table.append(_Entry(f"{b}.attn_out.weight", p + ("attn", "attn_out"), out_to_flax, out_to_torch))
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


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in state_dict.items():
        bare = name[len("backbone."):] if name.startswith("backbone.") else name
        out[bare] = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    return out


def params_from_torch(state_dict: Mapping[str, Any], model_config) -> dict:
    """Official DiT/AR ``state_dict`` (bare or ``backbone.``-prefixed names) -> Flax params tree.

    Raises ValueError listing missing or unexpected keys, or naming a parameter whose shape does
    not match the config (with both shapes).
    """
    sd = _strip_prefix(state_dict)
    table = param_table(model_config)
    expected = {e.torch_name for e in table}
    missing = sorted(expected - set(sd))
    extra = sorted(set(sd) - expected - {ROTARY_BUFFER})
    if missing or extra:
        raise ValueError(f"state_dict does not match the model config: missing keys {missing}, "
                         f"unexpected keys {extra}.")
    params: dict = {}
    for entry in table:
        value = entry.to_flax(sd[entry.torch_name].astype(np.float32))
        node = params
        for key in entry.path[:-1]:
            node = node.setdefault(key, {})
        node[entry.path[-1]] = value
    dim, heads = int(_field(model_config, "hidden_size")), int(_field(model_config, "n_heads"))
    if ROTARY_BUFFER in sd and not np.allclose(sd[ROTARY_BUFFER], rotary_inv_freq(dim // heads), rtol=1e-5):
        raise ValueError(f"{ROTARY_BUFFER} does not match head_dim {dim // heads}: the checkpoint "
                         "uses another rotary base or head count.")
    check_params(params, model_config)
    return params


def params_to_torch(params: Mapping, model_config, *, include_buffers: bool = True) -> dict[str, np.ndarray]:
    """Flax params -> official ``state_dict`` (bare names, float32 numpy) in ``state_dict`` order.

    ``include_buffers`` adds ``rotary_emb.inv_freq``, which torch registers just before the blocks.
    """
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
