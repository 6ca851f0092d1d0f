"""The FLOP count behind every MFU figure, checked against the matmuls the model really runs, and the
device peak table it divides by."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests_util import all_eqns

from mdlm_jax.training import flops
from mdlm_jax.models import DiT


def dot_flops(jaxpr) -> int:
    """2 x (output elements) x (contracted size) summed over every dot_general, nested jaxprs included."""
    total = 0
    for eqn in all_eqns(jaxpr):
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    return total


def test_small_model_at_1024_is_about_0_85_gflop_per_token():
    # n_matmul = 12 (4 + 8) 768^2 + 768 x 50,258 = 123,532,800; 6 n_matmul + 12 x 12 x 1024 x 768
    assert flops.train_flops_per_token(n_blocks=12, hidden_size=768, mlp_ratio=4, vocab_size=50258,
                                       seq_len=1024) == 854_443_008


@pytest.mark.parametrize("causal", [False, True], ids=["mdlm", "ar"])
def test_count_is_three_forward_passes_of_the_models_matmuls(causal):
    """The forward pass's dot_general FLOPs are one third of the per-token count times B x L, plus
    what the conditioning runs once per sequence (sigma MLP and adaLN: not per token, left out of
    the count). Attention counts as dense: the causal mask saves no FLOPs in XLA's kernel."""
    n, d, r, v, c, length, batch = 2, 32, 4, 37, 16, 24, 3
    model = DiT(vocab_size=v, hidden_size=d, cond_dim=c, n_blocks=n, n_heads=4, mlp_ratio=r, causal=causal,
                dropout=0.0, attention_impl="xla")
    tokens, sigma = jnp.zeros((batch, length), jnp.int32), jnp.ones((batch,))
    params = jax.eval_shape(model.init, jax.random.key(0), tokens, sigma)["params"]
    counted = dot_flops(jax.make_jaxpr(model.apply)({"params": params}, tokens, sigma).jaxpr)
    per_token = flops.train_flops_per_token(n_blocks=n, hidden_size=d, mlp_ratio=r, vocab_size=v, seq_len=length)
    per_sequence = 0 if causal else 2 * (256 * c + c * c + n * c * 6 * d + c * 2 * d)
    assert counted == per_token / 3 * batch * length + per_sequence * batch


def test_peak_table_and_override():
    device = lambda kind: types.SimpleNamespace(device_kind=kind)  # noqa: E731
    assert flops.peak_flops(device("NVIDIA H100 80GB HBM3")) == 989e12
    assert flops.peak_flops(device("NVIDIA H100 PCIe")) == 756e12
    assert flops.peak_flops(device("TPU v5 lite")) == 197e12
    assert flops.peak_flops(device("TPU v5p")) == 459e12
    assert flops.peak_flops(device("cpu")) is None
    np.testing.assert_allclose(flops.peak_flops(device("cpu"), 0.32), 0.32e12)
    with pytest.raises(ValueError, match="peak TFLOP/s must be >= 0"):
        flops.peak_flops(device("cpu"), -1.0)
