"""The doors: an objective, a model and a dataset registered from outside the package train,
evaluate and sample through the same code as the built-in ones, without editing the package."""

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from plugins.toy_plugins import FixedRateMLM
from tests_util import REPO, load_config

from mdlm_jax import checkpoint, config as config_lib, data, experiment, models
from mdlm_jax.evals import evaluate, sample
from mdlm_jax.training import task as task_lib, train


class BagOfWords(nn.Module):
    """Each position's logits from its own embedding and the mean of all: no attention, no sigma."""

    vocab_size: int
    width: int = 32

    @nn.compact
    def __call__(self, tokens, sigma=None, train=False):
        embed = nn.Embed(self.vocab_size, self.width)(tokens)
        h = nn.gelu(nn.Dense(self.width)(embed + embed.mean(1, keepdims=True)))
        return nn.Dense(self.vocab_size)(h).astype(jnp.float32)


@models.register_model("toy_bag_of_words")
def build_bag(cfg, *, vocab_size, causal):
    assert not causal
    return BagOfWords(vocab_size)


def toy_config(tmp_path):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.model.name = "toy_bag_of_words"
    cfg.diffusion.parameterization = "plugin_fixed_rate_mlm"
    cfg.train.update(steps=30, eval_every=30, checkpoint_every=30, log_every=10)
    cfg.optim.update(lr=3e-3, warmup_steps=0)
    return cfg


def test_a_registered_objective_and_model_train_evaluate_and_sample(tmp_path):
    cfg = toy_config(tmp_path)
    config_lib.validate(cfg, "train")
    s = experiment.build(cfg)
    assert isinstance(s.task.model, BagOfWords) and isinstance(s.task.objective, FixedRateMLM)
    before = evaluate.evaluate(s, task_lib.Weights(None, s.task.model.init(
        jax.random.key(0), jnp.zeros((1, cfg.data.seq_len), jnp.int32))["params"]))
    after = train.train_and_evaluate(cfg, str(tmp_path / "work"), s=s)
    assert np.isfinite(after["nelbo"]) and after["nelbo"] < 0.85 * before["nelbo"], (before, after)
    out = sample.generate(s, checkpoint.restore_params(str(tmp_path / "work"), s.abstract_state.params))
    assert (out.tokens != s.task.mask_id).all() and out.nfe == cfg.data.seq_len


def test_unknown_names_list_the_registered_ones():
    cfg = config_lib.default_config()
    cfg.model.name = "transformer-xl"
    with pytest.raises(ValueError, match=r"Unknown model.name 'transformer-xl'; choose one of .*'dit'.*toy_bag"):
        config_lib.validate(cfg)
    cfg = config_lib.default_config()
    cfg.diffusion.parameterization = "sedd2"
    with pytest.raises(ValueError, match=r"Unknown diffusion.parameterization 'sedd2'; choose one of .*'ar'.*'subs'"):
        task_lib.make_task(cfg, 10, 9)


def test_recorded_draws_replace_the_drawn_ones():
    """A batch carrying t and x_t is scored on exactly those: a run can be replayed step for step."""
    cfg = config_lib.default_config()
    task = task_lib.make_task(cfg, 11, 10)
    x0 = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 10
    t = jnp.array([0.25, 0.75])
    xt = x0.at[0, 1].set(10).at[1, :4].set(10)
    batch = dict(input_ids=x0, attention_mask=jnp.ones((2, 6)), t=t, xt=xt)
    ex = [task_lib.prepare(task, batch, jax.random.key(i), jax.random.key(9)) for i in range(2)]
    for e in ex:
        np.testing.assert_array_equal(e["xt"], xt)
        np.testing.assert_allclose(e["t"], t)
        np.testing.assert_allclose(e["weight"], 1 / t, rtol=1e-5)  # loglinear: weight 1/t
    drawn = task_lib.prepare(task, dict(input_ids=x0, attention_mask=jnp.ones((2, 6))), jax.random.key(0),
                             jax.random.key(9))
    assert not np.allclose(drawn["t"], t)


def alphabet_run(rng):
    """A stretch of the cyclic alphabet from a random letter: each letter follows from the last."""
    start, length = rng.integers(26), rng.integers(20, 60)
    return "".join(chr(ord("a") + (start + k) % 26) for k in range(length))


@data.register_dataset
class AlphabetRuns(data.DocumentDataset):
    """300 training and 30 validation documents of ``alphabet_run``."""

    name = "toy_alphabet_runs"

    def documents(self, data_config, split):
        rng = np.random.default_rng(["train", "validation"].index(split))
        return [alphabet_run(rng) for _ in range(300 if split == "train" else 30)]


def test_a_registered_dataset_trains_and_evaluates(tmp_path):
    cfg = load_config("quickstart", "quick")
    cfg.data.update(source="toy_alphabet_runs", cache_dir=str(tmp_path / "cache"))
    cfg.train.update(steps=40, eval_every=40, checkpoint_every=40, log_every=10)
    cfg.optim.update(lr=3e-3, warmup_steps=0)
    cfg.eval.max_batches = -1
    config_lib.validate(cfg, "train")
    s = experiment.build(cfg)
    batch = next(data.make_train_iterator(cfg.data, global_batch_size=cfg.train.batch_size, seed=cfg.seed))
    assert set(np.unique(batch["input_ids"])) <= set(range(ord("a"), ord("z") + 1)) | {256, 257}  # letters, BOS, EOS
    before = evaluate.evaluate(s, task_lib.init_state(s.task, s.optimizer, s.mesh, s.shardings, cfg.seed,
                                                      cfg.data.seq_len))
    after = train.train_and_evaluate(cfg, str(tmp_path / "work"), s=s)
    # The whole validation split was scored: its documents, each + EOS, cut into pieces of L - 2.
    stream = sum(len(d) + 1 for d in AlphabetRuns().documents(cfg.data, "validation"))
    assert after["tokens"] == before["tokens"] == stream // (cfg.data.seq_len - 2) * cfg.data.seq_len
    assert np.isfinite(after["nelbo"]) and after["nelbo"] < 0.8 * before["nelbo"], (before, after)  # it learned
    assert os.listdir(cfg.data.cache_dir) == ["toy_alphabet_runs"]  # tokenized into the one token cache


def test_plugins_imported_by_a_config_file_train_and_evaluate_through_main(tmp_path):
    """The user's path: a config file imports their module, which registers a dataset, an objective,
    a backbone and an evaluator; ``python -m mdlm_jax.main`` trains and evaluates them unedited."""
    config = REPO / "tests" / "plugins" / "toy_plugin_config.py"
    work = tmp_path / "work"

    def main(*flags):
        out = subprocess.run([sys.executable, "-m", "mdlm_jax.main", f"--config={config}", f"--workdir={work}",
                              f"--config.data.cache_dir={tmp_path / 'cache'}", *flags],
                             capture_output=True, text=True, timeout=900, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stderr

    log = main()
    assert "Training a plugin_mean_mixer model (objective 'plugin_fixed_rate_mlm')" in log
    assert "evaluators: accuracy every 2, bound every 3" in log
    assert re.search(r"step 6 \| eval/nelbo \d", log) and "eval/accuracy/step 6" in log
    steps = [json.loads(line)["step"] for line in (work / "plugin_eval.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    main("--mode=eval")
    assert json.loads((work / "eval_step_6.json").read_text())["tokens"] > 0
