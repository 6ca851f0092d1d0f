"""Evaluation: the PPL-bound estimator of ``evaluate.evaluate`` is unbiased for the exact
continuous-time NELBO and its standard error covers the truth; zero-shot mode end to end."""

import functools
import json
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tests_util
from tests_util import REPO

from mdlm_jax import checkpoint, config as config_lib, experiment, parallel
from mdlm_jax.evals import evaluate, zero_shot
from mdlm_jax.training import optim, task as task_lib

V_REAL, MASK, L = 4, 4, 4  # 4 tokens plus the mask, sequences of 4: 15 mask patterns each
ROWS, REPEATS, BATCHES, SEEDS = 16, 4, 2, 48  # distinct sequences, copies per batch, batches per run, runs
PARAM_SCALE = 0.3  # random weights at this scale: per-token NELBO 0.95 to 2.06 (uniform: log 4 = 1.39)


def _tiny_setup(time_sampler: str):
    """An Experiment and state for a 1-block DiT over V = 5 with every parameter random (the
    zero-initialised adaLN ones too, so the model is far from trivial) and sigma ignored."""
    cfg = config_lib.default_config()
    # vocab_multiple=1: every leaf is redrawn below, so padded rows would change the real rows' draws
    # (another random model than the one the bounds below were measured on)
    cfg.model.update(n_blocks=1, hidden_size=16, cond_dim=8, n_heads=2, dropout=0.0, dtype="float32",
                     time_conditioning=False, vocab_multiple=1)
    cfg.data.seq_len = L
    cfg.diffusion.update(time_sampler=time_sampler, sampling_eps=1e-3, num_steps=0)
    cfg.eval.update(batch_size=ROWS * REPEATS, max_batches=-1, num_t=1, use_ema=True)
    task = task_lib.make_task(cfg, V_REAL + 1, MASK)
    optimizer = optim.make_optimizer(cfg.optim)
    mesh = parallel.make_mesh(cfg.mesh)
    abstract, shardings = task_lib.state_shardings(task, optimizer, mesh, L)
    s = experiment.Experiment(cfg, mesh, task, optimizer, None, abstract, shardings, parallel.batch_sharding(mesh))
    params = jax.device_put(_random_params(task.model), shardings.params)
    denoise = jax.jit(lambda x, sigma: task.model.apply({"params": params}, x, sigma))
    return s, types.SimpleNamespace(ema_params=params, params=params), denoise


@functools.lru_cache(maxsize=None)
def _random_params(model):

    @jax.jit  # one compilation, not one per eager op
    def make(key):
        params = nn.meta.unbox(model.init(key, jnp.zeros((1, L), jnp.int32), jnp.zeros((1,)))["params"])
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
        return tree.unflatten([jax.random.normal(k, x.shape) * PARAM_SCALE for k, x in zip(keys, leaves)])

    return jax.device_get(make(jax.random.key(0)))


def _runs(s, state, batch, seeds):
    """evaluate() over ``BATCHES`` copies of ``batch`` for each eval seed: (nelbo, reported SE) arrays."""
    runs = []
    for seed in seeds:
        s.cfg.eval.seed = seed
        runs.append(evaluate.evaluate(s, state, batches=[batch] * BATCHES))
    assert all(r["tokens"] == BATCHES * ROWS * REPEATS * L and r["num_t"] == 1 for r in runs)
    return np.array([r["nelbo"] for r in runs]), np.array([r["nelbo_se"] for r in runs])


@pytest.mark.parametrize("time_sampler", ["antithetic", "sobol"])
def test_eval_estimator_is_unbiased_and_its_se_covers_the_exact_nelbo(time_sampler):
    s, state, denoise = _tiny_setup(time_sampler)
    x0 = np.random.default_rng(0).integers(0, V_REAL, (ROWS, L)).astype(np.int32)
    # Every row has L tokens, so the exact ratio NELBO is the mean of the rows' per-token NELBOs.
    exact = np.mean([tests_util.exact_nelbo_per_token(denoise, row, MASK) for row in x0])
    batch = {"input_ids": np.tile(x0, (REPEATS, 1)), "attention_mask": np.ones((ROWS * REPEATS, L), np.float32)}
    nelbo, se = _runs(s, state, batch, range(SEEDS))
    # Unbiased: the mean over seeds matches the enumeration within 4 empirical standard errors ...
    empirical_se = nelbo.std(ddof=1) / np.sqrt(SEEDS)
    assert abs(nelbo.mean() - exact) < 4 * empirical_se, (nelbo.mean(), exact, empirical_se)
    # ... and within 4 of the standard errors evaluate reports, pooled over the runs.
    pooled_se = np.sqrt(np.sum(se ** 2)) / SEEDS
    assert abs(nelbo.mean() - exact) < 4 * pooled_se, (nelbo.mean(), exact, pooled_se)
    # The reported SE covers each run's error: it is not smaller than the actual spread over seeds
    # (if anything larger: it ignores the stratification of t and counts the spread between the
    # sequences) and the exact value lies within 2 SE in nearly every run. The losses are
    # heavy-tailed (weight 1/t down to t = 1e-3), hence loose bounds: over 4 x 48 seeds the ratio
    # below ranged 0.69 to 0.91 for sobol (0.84 to 1.09 over 5 x 48 with the earlier RNG streams)
    # and the 2-SE coverage 0.90 to 1.00. A wrong count of rows or tokens is off by a factor of 8.
    assert 0.6 * nelbo.std(ddof=1) < se.mean() < 2 * nelbo.std(ddof=1), (se.mean(), nelbo.std(ddof=1))
    assert np.mean(np.abs(nelbo - exact) < 2 * se) >= 0.8, (nelbo, exact, se)


def test_se_is_calibrated_for_independent_rows():
    """One sequence in every row, each with its own uniform t: the rows are i.i.d., so the
    delta-method SE must match the spread over seeds (no stratification, no spread between
    sequences to make it conservative)."""
    s, state, denoise = _tiny_setup("uniform")
    x0 = np.array([1, 3, 0, 2], np.int32)
    exact = tests_util.exact_nelbo_per_token(denoise, x0, MASK)
    batch = {"input_ids": np.tile(x0, (ROWS * REPEATS, 1)), "attention_mask": np.ones((ROWS * REPEATS, L), np.float32)}
    nelbo, se = _runs(s, state, batch, range(1000, 1000 + SEEDS))
    assert abs(nelbo.mean() - exact) < 4 * nelbo.std(ddof=1) / np.sqrt(SEEDS), (nelbo.mean(), exact)
    # Over 5 x 48 seeds this ratio ranged 0.82 to 1.08 (heavy tails make the spread itself noisy).
    assert 0.65 < se.mean() / nelbo.std(ddof=1) < 1.5, (se.mean(), nelbo.std(ddof=1))


# ------------------------------------------------------------------------------- zero-shot mode


def _write_fixtures(root):
    """Penn Treebank and LAMBADA in their public layouts (lines of text; OpenAI's JSON lines)."""
    (root / "ptb").mkdir()
    sentences = [f" no it was n't black monday N {i} \\/ <unk> company 's $ N million " for i in range(40)]
    (root / "ptb" / "ptb.valid.txt").write_text("".join(x + "\n" for x in sentences))
    passages = [f"\u201cWell,\u201d said passage {i}, \u201cit is done.\u201d She nodded." for i in range(40)]
    (root / "lambada_test.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))


def _zero_shot_cli(*args, hf_home):
    env = dict(os.environ, HF_HOME=str(hf_home), JAX_PLATFORMS="cpu")
    env.pop("HF_DATASETS_CACHE", None)
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "mdlm_jax.main", "--config=configs/quickstart.py:quick",
                           "--mode=zero_shot", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_zero_shot_mode_prints_the_table_and_writes_json_reporting_missing_sets(tmp_path, monkeypatch):
    _write_fixtures(tmp_path)
    work, cache, hf = tmp_path / "work", tmp_path / "cache", tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(hf))  # no Hugging Face cache: unlisted sets are missing
    for var in ("HF_DATASETS_CACHE", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    # A freshly initialised checkpoint of the quick config (byte tokenizer, L = 32) at step 7. Its
    # output layer starts at zero, so it predicts uniformly over the V - 1 real tokens and its NELBO
    # is log(V - 1) times the masked fraction at t = 1, 1 - eps.
    cfg = tests_util.load_config("quickstart", "quick")
    cfg.data.cache_dir = str(cache)
    s = experiment.build(cfg)
    state = task_lib.init_state(s.task, s.optimizer, s.mesh, s.shardings, cfg.seed, cfg.data.seq_len)
    ckpt = checkpoint.Checkpointer(str(work), async_save=False)
    ckpt.save(7, state, data_state={}, config=cfg.to_dict(), force=True)
    ckpt.close()

    paths = f"--config.eval.zero_shot_paths=ptb={tmp_path / 'ptb'},lambada={tmp_path / 'lambada_test.jsonl'}"
    out = _zero_shot_cli(f"--workdir={work}", f"--config.data.cache_dir={cache}", paths,
                         "--config.eval.zero_shot_sets=lambada,wikitext2,ptb", "--config.eval.max_batches=-1",
                         hf_home=hf)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((work / "zero_shot.json").read_text())
    assert result["order"] == ["ptb", "wikitext2", "lambada"]  # the paper's column order
    assert result["step"] == 7 and result["model"] == "MDLM" and result["bound"] and result["use_ema"]
    ptb, wiki, lambada = (result["sets"][n] for n in result["order"])
    assert ptb["status"] == lambada["status"] == "ok"
    assert (ptb["split"], lambada["split"], ptb["detokenizer"], lambada["detokenizer"]) == (
        "validation", "test", "ptb", "lambada")
    for v in (ptb, lambada):  # the whole split: every wrapped block of 32
        assert np.isfinite(v["nelbo"]) and v["nelbo_se"] > 0 and v["seq_len"] == 32
        assert v["ppl"] == pytest.approx(np.exp(v["nelbo"])) and v["tokens"] == 32 * v["sequences"] > 100
        expected = np.log(s.task.model.vocab_size - 1) * (1 - 1e-3)
        assert abs(v["nelbo"] - expected) < 4 * v["nelbo_se"], (v, expected)
    assert wiki["status"] == "missing"
    assert wiki["fix"] == "--config.eval.zero_shot_paths=wikitext2=/path/to/wikitext-2-raw"
    assert "WikiText-2 was not found" in wiki["reason"]
    assert result["paper"]["MDLM"] == {"ptb": 95.26, "wikitext2": 32.83, "lambada": 47.52}
    # The printed table: header in the paper's order, the paper's rows, this checkpoint's row.
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["model", "PTB", "WikiText-2", "LAMBADA"]
    ours = next(line for line in lines if line.startswith("| MDLM (this checkpoint, step 7)"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[1:] == [f"≤ {ptb['ppl']:.2f}", "missing", f"≤ {lambada['ppl']:.2f}"]
    assert any(line.startswith("| MDLM (paper") and "≤ 95.26" in line for line in lines)
    assert any(line.startswith("| AR (paper") and "82.05" in line for line in lines)
    assert any(line.startswith("WikiText-2 (wikitext2) MISSING") and "--config.eval.zero_shot_paths=wikitext2="
               in line for line in lines)
    assert out.stdout.strip() == result["report"].strip()

    # The same evaluation in process: the sets are cached now and the numbers repeat (fixed seed).
    cfg.eval.update(zero_shot_sets=("ptb", "ag_news"), zero_shot_paths=f"ptb={tmp_path / 'ptb'}", max_batches=-1)
    again = zero_shot.run(s, state, step=7)
    assert again["sets"]["ptb"]["nelbo"] == pytest.approx(ptb["nelbo"], rel=1e-5)
    assert again["sets"]["ag_news"]["status"] == "missing"
    # Nothing readable: an error naming each set's fix (the CLI exits with status 1).
    cfg.eval.update(zero_shot_sets=("wikitext2", "ag_news"), zero_shot_paths="")
    with pytest.raises(zero_shot.NoZeroShotData, match=r"(?s)No zero-shot set could be read.*"
                                                       r"--config\.eval\.zero_shot_paths=ag_news=/path/to/ag_news_csv"):
        zero_shot.run(s, state, step=7, workdir=str(tmp_path / "none"))
    assert json.loads((tmp_path / "none" / "zero_shot.json").read_text())["sets"]["ag_news"]["status"] == "missing"


def test_zero_shot_settings_are_checked():
    assert zero_shot.requested_sets(("lambada,ptb", "arxiv", "wikitext103")) == ["ptb", "wikitext103", "lambada",
                                                                                 "arxiv"]
    assert zero_shot.parse_paths(" ptb=/a/b , lambada=/c.jsonl,") == {"ptb": "/a/b", "lambada": "/c.jsonl"}
    assert zero_shot.parse_paths({"ptb": "/a"}) == {"ptb": "/a"}
    with pytest.raises(ValueError, match="Unknown zero-shot set 'ptbb'"):
        zero_shot.requested_sets(("ptbb",))
    with pytest.raises(ValueError, match="is not NAME=PATH"):
        zero_shot.parse_paths("/data/ptb")
    with pytest.raises(ValueError, match="unknown set 'wiki'"):
        zero_shot.parse_paths("wiki=/x")
    d = zero_shot.data_config_for(config_lib.default_config().data, "lm1b", "/x")
    assert (d.source, d.path, d.packing, d.detokenizer, d.eval_split) == ("lm1b", "/x", "wrap", "", "")
    assert zero_shot.paper_value("AR", "wikitext103") == zero_shot.paper_value("AR", "wikitext2") == 25.75
