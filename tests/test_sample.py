"""mdlm_jax/evals/sample.py: templates (BOS, prefix, suffix), the compiled sampler reused, progress
reports, JSONL and trajectory output, semi-AR step numbers, AR sampling with its options, and
time-conditioned models sampled exactly."""

import html
import json
import logging
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats
from tests_util import load_config

from mdlm_jax import experiment
from mdlm_jax.data.tokenizers import ByteTokenizer
from mdlm_jax.diffusion import sampling
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


def step_reports(caplog):
    """(label, percent, NFEs) of each step report logged."""
    found = (re.fullmatch(r"(.+): (\d+)% of the masks filled, (\d+) NFEs, [\d.]+ s", r.getMessage())
             for r in caplog.records)
    return [(m[1], int(m[2]), int(m[3])) for m in found if m]


def unreported_block(s):
    """The objective's block sampler on the plain model: no progress callback."""
    return jax.jit(s.task.objective.block_sampler(s.task.model, len(sample._given_tokens(s)[0])))


def test_the_sampler_compiles_once_per_setup_and_reports_steps_each_time(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sample, "PROGRESS_SECONDS", 0.0)
    s = quick_setup(tmp_path, num_samples=2, predictor="ddpm_cache", num_steps=8)
    params = random_params(s)
    runs = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            runs.append((sample.generate(s, params), step_reports(caplog)))
    (first, first_reports), (second, second_reports) = runs
    assert first.compile_seconds > 0 and second.compile_seconds == 0.0
    np.testing.assert_array_equal(first.tokens, second.tokens)  # same seed, same samples
    assert first_reports and first_reports == second_reports  # the cached executable still reports
    labels, percents, nfes = zip(*first_reports)
    assert set(labels) == {"sampling"} and percents[0] >= 10 and list(percents) == sorted(set(percents))
    assert list(nfes) == sorted(set(nfes)) and nfes[-1] <= first.nfe
    # The callback changes no token: the same block sampler without it draws the same samples.
    with jax.set_mesh(s.mesh):
        plain = unreported_block(s)(params, jax.random.key(s.cfg.sample.seed), sample._template(s, 2))
    np.testing.assert_array_equal(first.tokens, plain.tokens)
    np.testing.assert_array_equal(first.reveal_step, plain.reveal_step)


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
    assert "\u27e8bos\u27e9" in html.unescape(page)  # the BOS before the prefix


class SharedSpecials(ByteTokenizer):
    """GPT-2's layout: one id for BOS, EOS and pad."""

    eos_id = pad_id = ByteTokenizer.bos_id


def test_the_page_wraps_text_and_labels_special_tokens():
    tok = ByteTokenizer()
    ids = [tok.bos_id] + tok.encode("two words\nnext") + [tok.eos_id, tok.pad_id]
    out = sample.Samples(np.array([ids]), np.arange(len(ids))[None], nfe=1, seconds=0.0, compile_seconds=0.0)
    page = sample.trajectory_html(tok, out, title="t")
    assert "white-space:pre-wrap" in page and "&nbsp;" not in page
    assert '"> </span>' in page  # a plain space: the line may break there
    assert "\n</span>" in page  # a real newline, which pre-wrap breaks the line at
    text = html.unescape(page)
    assert all(f"\u27e8{name}\u27e9</span>" in text for name in ("bos", "eos", "pad"))
    page = sample.trajectory_html(SharedSpecials(), out._replace(tokens=np.array([[256, 97, 256]])), title="t")
    assert re.search(r"\u27e8bos\u27e9.*>a<.*\u27e8eos\u27e9", html.unescape(page))


def test_semi_ar_steps_run_on_across_blocks_and_every_block_reports(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sample, "PROGRESS_SECONDS", 0.0)
    stride, strides = 16, 2
    s = quick_setup(tmp_path, num_samples=2, predictor="first_hitting", num_strides=strides, stride=stride)
    params = random_params(s)
    with caplog.at_level(logging.INFO):
        out = sample.generate(s, params)
    length = s.cfg.data.seq_len
    assert out.tokens.shape == (2, length + strides * stride)
    # first_hitting reveals one position per event: block 0 takes steps 1..L, block k the next `stride`.
    bounds = [0] + [length + k * stride for k in range(strides + 1)]
    for steps in out.reveal_step:
        for a, b in zip(bounds, bounds[1:]):
            np.testing.assert_array_equal(np.sort(steps[a:b]), np.arange(a + 1, b + 1))
            assert a == 0 or steps[a:b].min() > steps[:a].max()
    line = rf"semi-AR block (\d)/3 done: (\d+)/{bounds[-1]} tokens, (\d+) NFEs so far, [\d.]+ s"
    done = [re.fullmatch(line, r.getMessage()) for r in caplog.records]
    done = [(int(m[1]), int(m[2]), int(m[3])) for m in done if m]
    assert done == [(1, length, length), (2, length + stride, length + stride), (3, bounds[-1], out.nfe)]
    assert {label for label, _, _ in step_reports(caplog)} == {f"semi-AR block {k}/3" for k in (1, 2, 3)}
    # The callbacks change no token: semi-AR over the block sampler without them gives the same samples.
    block = unreported_block(s)
    with jax.set_mesh(s.mesh):
        plain = sampling.semi_autoregressive(lambda k, x: block(params, k, x), jax.random.key(s.cfg.sample.seed),
                                             sample._template(s, 2), stride=stride, num_strides=strides,
                                             mask_id=s.task.mask_id)
    np.testing.assert_array_equal(out.tokens, plain.tokens)
    np.testing.assert_array_equal(out.reveal_step, plain.reveal_step)


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
