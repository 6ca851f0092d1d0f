"""The vocabulary padded inside the model: the embedding and the output layer hold
``padded_size(V, multiple)`` rows, so that a tensor axis of up to ``multiple`` shards them (GPT-2's
50,258 rows divide no mesh axis above 2; 50,304 divide every power of two up to 128).

The pad rows start at zero and stay there: no token id reaches them, the logits are cut back to
the V real entries before any softmax, loss or sampler sees them, so their gradient is zero and
AdamW's update and decay of a zero row are zero. A padded model therefore trains, scores and
samples exactly as the unpadded one. Interop reads and writes the V real rows (``pad_params`` /
``unpad_params``); only the in-memory and orbax trees carry the padding.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

VOCAB_AXIS = "vocab"  # the logical axis name of the vocabulary dimension of a parameter


def padded_size(vocab_size: int, multiple: int) -> int:
    """V rounded up to a multiple of ``multiple`` (1 or 0: V itself)."""
    multiple = max(int(multiple), 1)
    return -(-int(vocab_size) // multiple) * multiple


def pad_init(init: Callable, vocab_size: int, axis: int) -> Callable:
    """An initializer that draws ``init`` at the real size V along ``axis`` and appends zero rows up
    to the requested shape: the first V rows are the unpadded model's, draw for draw."""
    def padded(key, shape, dtype=jnp.float32):
        real = list(shape)
        real[axis] = vocab_size
        value = init(key, tuple(real), dtype)
        widths = [(0, 0)] * len(shape)
        widths[axis] = (0, shape[axis] - vocab_size)
        return jnp.pad(value, widths)

    return padded


def cut_logits(logits, vocab_size: int):
    """logits (..., V_padded) -> (..., V): the pad entries never reach a softmax."""
    return logits if logits.shape[-1] == vocab_size else logits[..., :vocab_size]


def vocab_axes(model: nn.Module) -> dict[tuple, int]:
    """{param path: its vocabulary axis} from the logical names ``model``'s parameters carry."""
    boxed = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 2), jnp.int32),
                           jax.ShapeDtypeStruct((1,), jnp.float32))["params"]
    axes = {}
    flat = traverse_util.flatten_dict(boxed)  # a Partitioned box is not a dict: a leaf
    for path, leaf in flat.items():
        names = leaf.names if isinstance(leaf, nn.Partitioned) else ()
        if VOCAB_AXIS in names:
            axes[path] = names.index(VOCAB_AXIS)
    return axes


def _resize(params, model: nn.Module, rows: int, pad: bool) -> dict:
    flat = traverse_util.flatten_dict(nn.meta.unbox(params))
    for path, axis in vocab_axes(model).items():
        if path not in flat:
            continue  # a tree without this part (a BERT without its MLM head): the checks name it
        value = np.asarray(flat[path])
        have = value.shape[axis]
        if pad and have < rows:
            widths = [(0, 0)] * value.ndim
            widths[axis] = (0, rows - have)
            flat[path] = np.pad(value, widths)
        elif not pad and have > rows:
            flat[path] = np.take(value, np.arange(rows), axis=axis)
    return traverse_util.unflatten_dict(flat)


def pad_params(params, model: nn.Module) -> dict:
    """A tree with V rows along each vocabulary axis (as interop reads it) -> ``model``'s padded
    rows (zeros appended), numpy. Trees already padded pass unchanged."""
    return _resize(params, model, model.padded_vocab, pad=True)


def unpad_params(params, model: nn.Module) -> dict:
    """``model``'s padded tree -> V rows along each vocabulary axis (what interop writes), numpy."""
    return _resize(params, model, model.vocab_size, pad=False)
