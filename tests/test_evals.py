"""Evaluators by config: each runs at its own period in a real training run and writes its outputs;
one registered from outside the package runs without editing the loop; a SIGTERM during an
evaluation saves the step and stops; generative perplexity in the loop equals the stand-alone tool's."""

import json
import os
import signal

import numpy as np
import pytest
from tests_util import load_config

from mdlm_jax import checkpoint, evals
from mdlm_jax.evals import evaluate, gen_ppl
from mdlm_jax.training import train
from mdlm_jax.training.metrics_writer import MetricsWriter

CALLS = []


@evals.register_evaluator("toy_counter")
class Counter(evals.Evaluator):
    """Records the steps it runs at and the EMA of one parameter leaf: a door for new metrics."""

    def run(self, state, step, *, stop=None, writer=None):
        CALLS.append(step)
        return {f"eval/{self.name}/step": float(step)}


@evals.register_evaluator("toy_sigterm_bound")
class SigtermDuringBound(evaluate.Bound):
    """The validation bound, with a SIGTERM arriving as it starts (a preemption mid-evaluation)."""

    def run(self, state, step, *, stop=None, writer=None):
        os.kill(os.getpid(), signal.SIGTERM)
        return super().run(state, step, stop=stop, writer=writer)


@pytest.fixture
def scalars(monkeypatch):
    """Every (step, scalars) the run's MetricsWriter is given."""
    written = []
    original = MetricsWriter.write_scalars

    def record(self, step, values):
        written.append((step, dict(values)))
        return original(self, step, values)

    monkeypatch.setattr(MetricsWriter, "write_scalars", record)
    return written


def quick(tmp_path, steps):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=steps, log_every=0, eval_every=0, checkpoint_every=0)
    return cfg


def at(written, step):
    """All scalars written at ``step``."""
    out = {}
    for s, values in written:
        if s == step:
            out.update(values)
    return out


def steps_with(written, key):
    return [step for step, values in written if key in values]


def test_evaluators_run_at_their_own_periods_and_write_outputs(tmp_path, scalars):
    cfg = quick(tmp_path, steps=5)
    cfg.evals.bound.every = 2
    cfg.evals.samples.every = 3
    with cfg.unlocked():
        cfg.evals.count = dict(type="toy_counter", every=4)
    CALLS.clear()
    workdir = tmp_path / "work"
    metrics = train.train_and_evaluate(cfg, str(workdir))
    assert steps_with(scalars, "eval/nelbo") == [2, 4, 5]  # its period and the last step
    assert steps_with(scalars, "eval/samples/entropy") == [3, 5]
    assert CALLS == [4, 5] and steps_with(scalars, "eval/count/step") == [4, 5]
    assert metrics["nelbo"] == at(scalars, 5)["eval/nelbo"]  # the last bound is returned
    files = sorted(p.name for p in (workdir / "samples").iterdir())
    assert [f.split("_")[1] for f in files] == ["3", "5"], files
    records = [json.loads(line) for line in (workdir / "samples" / files[-1]).read_text().splitlines()]
    assert len(records) == cfg.sample.num_samples
    entropy = gen_ppl.mean_unigram_entropy([gen_ppl.counted_tokens(r["token_ids"], _bytes()) for r in records])
    assert at(scalars, 5)["eval/samples/entropy"] == pytest.approx(entropy, rel=1e-12)
    # Each evaluated step was saved before it was evaluated.
    assert set(checkpoint.Checkpointer(str(workdir)).all_steps()) >= {4, 5}


def _bytes():
    from mdlm_jax.data import get_tokenizer  # pylint: disable=import-outside-toplevel

    return get_tokenizer("bytes")


def test_an_unset_period_is_train_eval_every_and_zero_is_off(tmp_path, scalars):
    cfg = quick(tmp_path, steps=4)
    cfg.train.eval_every = 3
    CALLS.clear()
    with cfg.unlocked():
        cfg.evals.count = dict(type="toy_counter", every=0)
    train.train_and_evaluate(cfg, str(tmp_path / "work"))
    assert steps_with(scalars, "eval/nelbo") == [3, 4] and CALLS == []


def test_sigterm_during_an_evaluation_saves_that_step_and_stops(tmp_path, scalars):
    cfg = quick(tmp_path, steps=6)
    cfg.evals.bound.every = 0
    with cfg.unlocked():
        cfg.evals.preempted = dict(type="toy_sigterm_bound", every=3)
    workdir = str(tmp_path / "work")
    assert train.train_and_evaluate(cfg, workdir) == {}
    assert checkpoint.Checkpointer(workdir).latest_step() == 3  # not trained on past the interrupted eval
    assert steps_with(scalars, "eval/preempted/nelbo") == []
    assert signal.getsignal(signal.SIGTERM) is not None


def test_unknown_evaluator_and_bad_period_are_named(tmp_path):
    from mdlm_jax import config as config_lib  # pylint: disable=import-outside-toplevel

    cfg = quick(tmp_path, steps=2)
    with cfg.unlocked():
        cfg.evals.mine = dict(type="bleu", every=1)
    with pytest.raises(ValueError, match=r"evals.mine: unknown evaluator type 'bleu'; choose one of .*'bound'"):
        config_lib.validate(cfg)
    cfg = quick(tmp_path, steps=2)
    cfg.evals.samples.every = -1
    with pytest.raises(ValueError, match=r"evals.samples.every must be >= 0"):
        config_lib.validate(cfg)


def test_gen_ppl_without_an_evaluator_model_fails_before_training(tmp_path):
    cfg = quick(tmp_path, steps=2)
    cfg.evals.gen_ppl.every = 1
    with pytest.raises(train.StartupError, match=r"evals.gen_ppl.evaluator must name a local Hugging Face GPT-2"):
        train.train_and_evaluate(cfg, str(tmp_path / "work"))
    assert not checkpoint.has_checkpoint(str(tmp_path / "work"))


@pytest.fixture(scope="module")
def byte_gpt2(tmp_path_factory):
    """A random tiny Hugging Face GPT-2 whose byte-level BPE has the 256 bytes and no merges, so
    any text (the byte model's samples) tokenizes; weights widened so perplexities differ."""
    pytest.importorskip("transformers")
    import torch
    from tokenizers import pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("byte_gpt2")
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" not in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(path, safe_serialization=True)
    return path


def test_gen_ppl_in_the_loop_equals_the_stand_alone_tool_on_the_same_samples(tmp_path, scalars, byte_gpt2):
    cfg = quick(tmp_path, steps=3)
    cfg.evals.bound.every = 0
    cfg.evals.samples.every = 3
    cfg.evals.gen_ppl.update(every=3, evaluator=str(byte_gpt2), context=64)
    workdir = tmp_path / "work"
    train.train_and_evaluate(cfg, str(workdir))
    (samples_file,) = (workdir / "samples").iterdir()
    report = gen_ppl.main(["--evaluator", str(byte_gpt2), "--samples", str(samples_file), "--context", "64"])
    logged = at(scalars, 3)
    assert logged["eval/gen_ppl/gen_ppl"] == pytest.approx(report["gen_ppl"], rel=1e-6)
    assert logged["eval/gen_ppl/entropy"] == pytest.approx(report["entropy"], rel=1e-9)
    assert np.isfinite(report["gen_ppl"]) and report["scored_from"] == {"document": cfg.sample.num_samples}
