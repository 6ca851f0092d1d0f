"""mdlm_jax/evals/sample.py: templates (BOS, prefix, suffix), the compiled sampler reused, JSONL and
trajectory output, AR sampling with its options, and time-conditioned models sampled exactly."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats
from tests_util import load_config

from mdlm_jax import experiment
from mdlm_jax.evals import sample
from mdlm_jax.training import task as task_lib


def quick_setup(tmp_path, **sample_fields):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.sample.update(sample_fields)
    return experiment.build(cfg, "sample")


def random_params(s, seed=0):
    params = nn.meta.unbox(s.task.model.init(jax.random.key(seed), jnp.zeros((1, s.cfg.data.seq_len), jnp.int32),
                                             jnp.zeros((1,)))["params"])
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return tree.unflatten([0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def test_prefix_starts_with_bos_and_prefix_and_suffix_never_change(tmp_path):
    s = quick_setup(tmp_path, prefix="Hi", suffix="end.", num_samples=3, predictor="ddpm")
    out = sample.generate(s, random_params(s))
    bos = s.tokenizer.bos_id
    first, last = [bos] + s.tokenizer.encode("Hi"), s.tokenizer.encode("end.")
    assert (out.tokens[:, :len(first)] == first).all() and (out.tokens[:, -len(last):] == last).all()
    assert (out.reveal_step[:, :len(first)] == 0).all() and (out.reveal_step[:, -len(last):] == 0).all()
    assert (out.tokens != s.task.mask_id).all() and (out.reveal_step[:, len(first):-len(last)] > 0).all()


def test_unconditional_template_is_all_mask_and_too_long_a_prefix_is_named(tmp_path):
    s = quick_setup(tmp_path, num_samples=2)
    assert (np.asarray(sample._template(s, 2)) == s.task.mask_id).all()
    s = quick_setup(tmp_path, prefix="x" * 40)
    with pytest.raises(ValueError, match="leave room to generate"):
        sample.generate(s, random_params(s))


def test_the_sampler_compiles_once_per_setup(tmp_path):
    s = quick_setup(tmp_path, num_samples=2, predictor="ddpm_cache", num_steps=8)
    params = random_params(s)
    first, second = sample.generate(s, params), sample.generate(s, params)
    assert first.compile_seconds > 0 and second.compile_seconds == 0.0
    np.testing.assert_array_equal(first.tokens, second.tokens)  # same seed, same samples


def test_jsonl_and_trajectory_page(tmp_path):
    s = quick_setup(tmp_path, num_samples=2, trajectory_html=True, prefix="A")
    params = random_params(s)
    path = tmp_path / "samples" / "step_3.jsonl"
    out = sample.write_samples(s, task_lib.Weights(None, params), path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2
    for record, row in zip(records, out.tokens):
        assert record["token_ids"] == row.tolist() and record["tokenizer"] == "bytes"
        assert record["text"] == s.tokenizer.decode(row.tolist()) and record["text"].startswith("A")
        assert record["nfe"] == out.nfe and "compile_seconds" in record
        eos = s.tokenizer.eos_id
        ids = row.tolist()[1:]
        assert record["ended"] == (eos in ids)
        assert record["document"] == s.tokenizer.decode(ids[:ids.index(eos)] if eos in ids else ids)
    page = path.with_suffix(".html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<p>") >= 3 and 'title="step 0"' in page


def _pooled_chisquare(counts, expected):
    """Chi-square p-value with the categories expected fewer than 5 times pooled into one."""
    rare = expected < 5
    c = np.append(counts[~rare], counts[rare].sum())
    e = np.append(expected[~rare], expected[rare].sum())
    return stats.chisquare(c[e > 0], e[e > 0] * c.sum() / e.sum()).pvalue


def test_ar_sampling_keeps_the_prefix_and_draws_at_the_temperature(tmp_path):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.diffusion.parameterization = "ar"
    cfg.data.seq_len = 8
    cfg.sample.update(num_samples=2000, prefix="ab", temperature=0.5)
    s = experiment.build(cfg, "sample")
    params = random_params(s)
    out = sample.generate(s, params)
    given = [s.tokenizer.bos_id] + s.tokenizer.encode("ab")
    assert (out.tokens[:, :3] == given).all() and out.nfe == cfg.data.seq_len - 3
    assert (out.tokens != s.task.mask_id).all()
    # The first drawn token against softmax(logits / T) at the position before it.
    logits = np.asarray(s.task.model.apply({"params": params}, jnp.asarray(out.tokens[:1])), np.float64)[0, 2]
    logits[s.task.mask_id] = -np.inf
    counts = np.bincount(out.tokens[:, 3], minlength=len(logits))
    assert _pooled_chisquare(counts, 2000 * special.softmax(logits / 0.5)) > 1e-3
    assert _pooled_chisquare(counts, 2000 * special.softmax(logits)) < 1e-6  # the test can tell T = 1


def test_a_time_conditioned_model_gets_no_stale_cache(tmp_path):
    """With time conditioning ddpm_cache calls the denoiser at every step (its output depends on
    sigma); without it the cache skips the steps where nothing changed."""
    nfe = {}
    for tc in (False, True):
        cfg = load_config("quickstart", "quick")
        cfg.data.cache_dir = str(tmp_path / "cache")
        cfg.model.time_conditioning = tc
        cfg.sample.update(num_samples=1, predictor="ddpm_cache", num_steps=64)
        s = experiment.build(cfg, "sample")
        nfe[tc] = sample.generate(s, random_params(s)).nfe
    assert nfe[True] == 64 + 1 and nfe[False] < 64
