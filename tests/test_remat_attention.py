"""Rematerialisation and the attention kernel change memory and speed, never parameters or numbers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_sharded_step import assert_same, run_steps, small_config
from tests_util import OPTIMIZED, all_eqns

from mdlm_jax.training import task as task_lib
from mdlm_jax.models import DiT
from mdlm_jax import parallel
from mdlm_jax.models.attention import ATTENTION_IMPLEMENTATIONS, resolve_attention_impl
from mdlm_jax.models.dit import REMAT_POLICIES

VOCAB, LENGTH = 37, 16
TINY = dict(vocab_size=VOCAB, hidden_size=32, cond_dim=16, n_blocks=2, n_heads=4)  # head_dim 8
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, LENGTH)).astype(np.int32)
SIGMA = np.array([0.3, 1.2], np.float32)


def random_params(model, seed=0):
    """Normal(0, 0.3) weights in the model's tree (not its init: the zero-initialised output layer
    and adaLN would make every logit 0 and most gradients vanish). Host RNG: nothing to compile."""
    shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(1), TOKENS, SIGMA)["params"])
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: (0.3 * rng.standard_normal(a.shape)).astype(np.float32), shapes)


def loss_fn(model):
    def loss(params):  # dropout on: remat must replay the same masks in the backward pass
        logits = model.apply({"params": params}, TOKENS, SIGMA, train=True, rngs={"dropout": jax.random.key(2)})
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
    return loss


def axes_and_shapes(boxed):
    return jax.tree_util.tree_map(lambda a: (a.value.shape, a.names) if hasattr(a, "names") else a.shape,
                                  boxed, is_leaf=lambda a: hasattr(a, "names"))


def checkpoint_policies(fn, *args):
    """The policies of the checkpoint (remat) equations in fn's jaxpr, nested jaxprs included."""
    return [eqn.params["policy"] for eqn in all_eqns(jax.make_jaxpr(fn)(*args))
            if eqn.primitive.name in ("checkpoint", "remat", "remat2")]  # the name varies by jax version


@pytest.mark.parametrize("causal", [False, True], ids=["mdlm", "ar"])
def test_remat_keeps_params_loss_and_gradients(causal):
    """Eager value_and_grad (cheap to compile); the jitted train step is checked below."""
    reference = DiT(**TINY, dropout=0.1, causal=causal)
    ref_boxed = jax.eval_shape(reference.init, jax.random.key(1), TOKENS, SIGMA)
    params = random_params(reference)
    ref_loss, ref_grads = jax.value_and_grad(loss_fn(reference))(params)
    assert checkpoint_policies(loss_fn(reference), params) == []
    for name in ("block", "dots_saveable"):
        model = DiT(**TINY, dropout=0.1, causal=causal, remat=name)
        # Same tree, names, shapes and logical axes (interop and sharding read them); the init
        # values are compared by the train-step test, which starts both runs from model.init.
        boxed = jax.eval_shape(model.init, jax.random.key(1), TOKENS, SIGMA)
        assert jax.tree_util.tree_structure(boxed) == jax.tree_util.tree_structure(ref_boxed)
        assert axes_and_shapes(boxed) == axes_and_shapes(ref_boxed)
        assert sorted(boxed["params"]) == sorted(["vocab_embed", "blocks_0", "blocks_1", "output_layer"]
                                                 + ([] if causal else ["sigma_map"]))
        # The policy really is in the graph, once per block.
        assert checkpoint_policies(loss_fn(model), params) == [REMAT_POLICIES[name]] * TINY["n_blocks"]
        loss, grads = jax.value_and_grad(loss_fn(model))(params)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), grads, ref_grads)


@pytest.mark.parametrize("causal", [False, True], ids=["mdlm", "ar"])
def test_scanned_blocks_match_the_unrolled_loop(causal):
    """model.scan_blocks: one lax.scan over the stacked block params; same tree, logits and gradients
    (dropout off: its masks are drawn differently), with and without remat."""
    reference = DiT(**TINY, dropout=0.0, causal=causal)
    params = random_params(reference)
    # At the suite's optimisation level 0 the two orders of float32 sums drift 3e-6 apart.
    value_and_grad = lambda model: jax.jit(jax.value_and_grad(loss_fn(model)), compiler_options=OPTIMIZED)  # noqa: E731
    ref_loss, ref_grads = value_and_grad(reference)(params)
    for remat in ("none", "block"):
        model = DiT(**TINY, dropout=0.0, causal=causal, remat=remat, scan_blocks=True)
        assert axes_and_shapes(jax.eval_shape(model.init, jax.random.key(1), TOKENS, SIGMA)) == \
            axes_and_shapes(jax.eval_shape(reference.init, jax.random.key(1), TOKENS, SIGMA))
        jaxpr = str(jax.make_jaxpr(loss_fn(model))(params))
        assert f"length={TINY['n_blocks']}" in jaxpr
        assert len(checkpoint_policies(loss_fn(model), params)) == (remat != "none")
        loss, grads = value_and_grad(model)(params)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, ref_grads)
    # Dropout on: a different mask per block and per step key.
    model = DiT(**TINY, dropout=0.5, causal=causal, scan_blocks=True)

    def logits(key):
        return model.apply({"params": params}, TOKENS, SIGMA, train=True, rngs={"dropout": key})

    a, b = logits(jax.random.key(0)), logits(jax.random.key(1))
    assert np.isfinite(a).all() and not np.allclose(a, b)


def test_train_step_with_block_remat_matches_none():
    cfg = small_config("subs")
    cfg.model.update(n_blocks=1, dropout=0.1)
    reference = run_steps(cfg)
    cfg.model.remat = "block"
    assert task_lib.make_task(cfg, 61, 60).model.remat == "block"
    assert_same(run_steps(cfg), reference, tol=1e-6)


def assert_matches_xla(out, reference, dtype, msg=""):
    """Logits against XLA attention's, relative to the largest logit (scale). float32: every logit
    within 1e-5 of scale. bfloat16: on average within 1e-3 of scale, and every one within 1e-2 (one
    to three bf16 ulps: the logits are rounded to bf16, so two kernels that accumulate in different
    orders can differ by an ulp anywhere, and 1e-3 of scale is below one ulp for the largest)."""
    out, reference = np.asarray(out, np.float32), np.asarray(reference, np.float32)
    scale = np.abs(reference).max()
    assert scale > 0.1
    if dtype == jnp.float32:
        np.testing.assert_allclose(out, reference, rtol=0, atol=1e-5 * scale, err_msg=msg)
    else:
        np.testing.assert_allclose(out, reference, rtol=0, atol=1e-2 * scale, err_msg=msg)
        assert np.abs(out - reference).mean() <= 1e-3 * scale, msg


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("impl", [i for i in ATTENTION_IMPLEMENTATIONS if i not in ("xla", "splash")], ids=str)
def test_attention_impl_matches_xla(impl, dtype):
    params = random_params(DiT(**TINY))

    def logits(impl, causal):  # eager: the implementations share most op compilations
        model = DiT(**TINY, dropout=0.0, causal=causal, dtype=dtype, attention_impl=impl)
        return np.asarray(model.apply({"params": params}, TOKENS, SIGMA))

    for causal in (False, True):
        reference = logits("xla", causal)
        try:
            out = logits(impl, causal)
        except (RuntimeError, NotImplementedError) as e:  # jax has no such kernel for this backend / dtype
            # Only where cuDNN flash attention cannot run; a failure on a capable GPU is a failure.
            capable = resolve_attention_impl("auto", dtype, TINY["hidden_size"] // TINY["n_heads"], LENGTH) == "cudnn"
            if impl != "cudnn" or capable:
                raise
            pytest.skip(f"{impl} on {jax.default_backend()} in {jnp.dtype(dtype).name}: {e}")
        assert_matches_xla(out, reference, dtype, f"causal={causal}")


@pytest.mark.parametrize("causal", [False, True], ids=["mdlm", "ar"])
def test_chunked_attention_gradients_match_xla(causal):
    params = random_params(DiT(**TINY))

    def loss(impl):
        model = DiT(**TINY, dropout=0.0, causal=causal, attention_impl=impl)
        return lambda p: model.apply({"params": p}, TOKENS, SIGMA).astype(jnp.float32).std()

    want, got = (jax.tree.leaves(jax.jit(jax.grad(loss(impl)))(params)) for impl in ("xla", "chunked"))
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


SPLASH_LENGTH = 384  # blocks of gcd(384, 512) = 128: a 3 x 3 grid, with partial blocks when causal
SPLASH_TOKENS = np.random.default_rng(1).integers(0, VOCAB, (2, SPLASH_LENGTH)).astype(np.int32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_splash_matches_xla(dtype):
    """The Pallas TPU splash kernel (interpret mode off TPU: the same kernel code, run by the Pallas
    interpreter) gives XLA's logits and, in float32, its gradients; tolerances as above."""
    params = random_params(DiT(**TINY))

    def model(impl, causal):
        return DiT(**TINY, dropout=0.0, causal=causal, dtype=dtype, attention_impl=impl)

    def loss(impl, causal):
        def fn(params):
            logits = model(impl, causal).apply({"params": params}, SPLASH_TOKENS, SIGMA)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
        return fn

    for causal in (False, True):
        # Both jitted: XLA:CPU keeps some bfloat16 intermediates in float32 under jit, not eagerly.
        reference, out = (np.asarray(jax.jit(model(impl, causal).apply)({"params": params}, SPLASH_TOKENS, SIGMA))
                          for impl in ("xla", "splash"))
        assert_matches_xla(out, reference, dtype, f"causal={causal}")
        if dtype == jnp.float32:
            # At the suite's optimisation level 0 the two orders of float32 sums drift 4e-6 apart.
            ref_grads, grads = (jax.jit(jax.grad(loss(impl, causal)), compiler_options=OPTIMIZED)(params)
                                for impl in ("xla", "splash"))
            jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                                   grads, ref_grads)


def test_splash_under_a_mesh_runs_per_shard():
    """Under jax.set_mesh the kernel runs in shard_map (batch over data x fsdp, heads over tensor),
    and the sharded logits equal the single-device ones."""
    params = random_params(DiT(**TINY))
    model = DiT(**TINY, dropout=0.0, attention_impl="splash")
    reference = np.asarray(model.apply({"params": params}, SPLASH_TOKENS, SIGMA))
    mesh = parallel.make_mesh(small_config(mesh=(2, 1, 4)).mesh)
    apply = jax.jit(model.apply)
    with jax.set_mesh(mesh):
        tokens = jax.device_put(SPLASH_TOKENS, parallel.batch_sharding(mesh))
        assert "shard_map" in str(jax.make_jaxpr(apply)({"params": params}, tokens, SIGMA))
        out = np.asarray(apply({"params": params}, tokens, SIGMA))
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def test_splash_names_a_length_it_cannot_take():
    model = DiT(**TINY, attention_impl="splash")
    with pytest.raises(ValueError, match=r"multiple of 128; got L=16"):
        model.apply({"params": random_params(model)}, TOKENS, SIGMA)


def test_auto_attention_resolution():
    def auto(dtype, head_dim, platform, length=1024):
        return resolve_attention_impl("auto", dtype, head_dim, length, platform=platform)

    assert auto(jnp.bfloat16, 64, "cuda") == "cudnn"
    assert auto(jnp.float16, 128, "cuda") == "cudnn"
    assert auto(jnp.float32, 64, "cuda") == "xla"  # cuDNN has no fp32 kernel
    assert auto(jnp.bfloat16, 12, "cuda") == "xla"  # head_dim % 8
    assert auto(jnp.bfloat16, 160, "cuda") == "xla"
    assert auto(jnp.bfloat16, 64, "other") == "xla"
    assert auto(jnp.float32, 64, "tpu") == "splash"
    assert auto(jnp.bfloat16, 64, "tpu", length=100) == "xla"  # splash needs L % 128 == 0
    for impl in (None, "xla", "cudnn", "splash"):
        assert resolve_attention_impl(impl, jnp.bfloat16, 64, 1024, platform="cuda") == impl
    if jax.default_backend() == "cpu":
        assert resolve_attention_impl("auto", jnp.bfloat16, 64, 1024) == "xla"


def test_unknown_values_fail_with_the_choices():
    with pytest.raises(ValueError, match=r"Unknown remat 'full'.*'none', 'block', 'dots_saveable'"):
        DiT(**TINY, remat="full")
    with pytest.raises(ValueError, match=r"Unknown attention_impl 'flash'.*'xla', 'cudnn'"):
        DiT(**TINY, attention_impl="flash")
    cfg = small_config("ar")
    cfg.model.remat = "everything"
    with pytest.raises(ValueError, match="Unknown remat 'everything'"):
        task_lib.make_task(cfg, 61, 60)
