"""BERT turned generative, end to end through the real config (configs/bert_mdlm_c4.py): a
Hugging Face BERT directory as ``model.pretrained`` is evaluated as it is (an empty workdir),
fine-tuned with the MDLM objective on the user's text (the bound drops), resumed bit-exactly,
exported as a BertForMaskedLM that transformers loads with the same logits, and sampled with
every time-free sampler, semi-autoregressive strides and infilling."""

import json
import shutil

import jax
import numpy as np
import pytest
from tests_util import BERT_DIR, load_config, needs_bert

from mdlm_jax import checkpoint, data, experiment, main as main_lib
from mdlm_jax.diffusion import losses
from mdlm_jax.evals import evaluate, sample
from mdlm_jax.interop import cli as interop_cli
from mdlm_jax.training import task as task_lib, train

pytestmark = needs_bert
WORDS = "the river runs past a quiet stone garden where morning light falls on an old letter".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random tiny BertForMaskedLM with bert-base-uncased's vocabulary (transformers), and a corpus."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("bert_mdlm")
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    hf.save_pretrained(root / "bert")
    shutil.copy(f"{BERT_DIR}/vocab.txt", root / "bert" / "vocab.txt")
    rng = np.random.default_rng(0)
    (root / "mine.jsonl").write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS, 30))}) + "\n"
                                             for _ in range(80)))
    return root


def overrides(root, **extra) -> dict:
    base = {"model.pretrained": str(root / "bert"), "model.dtype": "float32", "data.source": "files",
            "data.files": (str(root / "mine.jsonl"),), "data.tokenizer_path": str(root / "bert"), "data.seq_len": 32,
            "data.val_fraction": 0.2, "data.cache_dir": str(root / "cache"), "train.batch_size": 8,
            "train.log_every": 10, "train.eval_every": 0, "train.checkpoint_every": 10, "train.sample_at_end": False,
            "optim.lr": 1e-3, "optim.warmup_steps": 1, "eval.batch_size": 8, "sample.num_samples": 2,
            "sample.num_steps": 4}
    return dict(base, **extra)


def configured(root, mode, workdir, **extra):
    """What ``python -m mdlm_jax.main --mode=MODE --config=configs/bert_mdlm_c4.py --config.a.b=v`` resolves."""
    changes = overrides(root, **extra)
    requested = load_config("bert_mdlm_c4")
    for path, value in changes.items():
        *sections, field = path.split(".")
        node = requested
        for section in sections:
            node = node[section]
        node[field] = value
    return main_lib.load_config(mode, str(workdir), requested=requested, overrides=changes, config_given=True)


def test_bert_is_evaluated_fine_tuned_resumed_exported_and_sampled(setup, tmp_path):
    root = setup
    # Before: the pretrained weights as they are, from an empty workdir (what --mode=eval does).
    cfg, step = configured(root, "eval", tmp_path / "before")
    s = experiment.build(cfg, "eval")  # fills the architecture from the directory's config.json
    assert step is None and (cfg.model.name, cfg.model.hidden_size, cfg.model.n_blocks) == ("bert", 32, 2)
    assert cfg.model.bert.intermediate_size == 64
    assert (s.task.mask_id, s.task.model.config.vocab_size) == (103, 30522)
    assert s.task.model.padded_vocab == 30592  # model.vocab_multiple pads; the export below holds 30,522 rows
    tree = train.pretrained_params(s)
    before = evaluate.evaluate(s, task_lib.Weights(params=tree, ema_params=tree))

    # Fine-tune 12 steps: the bound drops.
    work = tmp_path / "ft"
    cfg, _ = configured(root, "train", work, **{"train.steps": 12, "train.ema": 0.0, "train.eval_every": 12,
                                                 "train.checkpoint_every": 6})
    after = train.train_and_evaluate(cfg, str(work))
    assert after["nelbo"] < before["nelbo"] - 0.5, (before["nelbo"], after["nelbo"])

    # Resume: from step 6 (a copy with step 12 removed) on to 12 equals the straight run, bit for bit.
    resumed = tmp_path / "resumed"
    shutil.copytree(work, resumed)
    shutil.rmtree(resumed / "checkpoints" / "12")
    cfg, _ = configured(root, "train", resumed, **{"train.steps": 12, "train.ema": 0.0, "train.checkpoint_every": 6})
    train.train_and_evaluate(cfg, str(resumed))
    a, _, _ = checkpoint.restore_numpy(str(work), ("params", "opt_state"))
    b, _, _ = checkpoint.restore_numpy(str(resumed), ("params", "opt_state"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(x, y)

    # Export: transformers loads a BertForMaskedLM with our logits.
    out = tmp_path / "export"
    assert interop_cli.main(["export", "--workdir", str(work), "--format", "hf-bert", "--out", str(out),
                             "--no-ema"]) == 0
    transformers, torch = pytest.importorskip("transformers"), pytest.importorskip("torch")
    hf, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    assert transformers.AutoTokenizer.from_pretrained(out)("the river")["input_ids"] == [101, 1996, 2314, 102]
    cfg, step = configured(root, "sample", work)
    s = experiment.build(cfg, "sample")
    params = checkpoint.restore_params(str(work), s.abstract_state.params, use_ema=False)
    tokens = np.random.default_rng(1).integers(999, 30000, (2, 32))
    ours = np.asarray(s.task.model.apply({"params": params}, tokens, None))
    with torch.no_grad():
        theirs = hf.eval()(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)

    # Generation: every time-free sampler, semi-AR strides, infilling.
    for predictor in ("ddpm", "ddpm_cache", "first_hitting", "analytic"):
        cfg, _ = configured(root, "sample", work, **{"sample.predictor": predictor})
        s = experiment.build(cfg, "sample")
        got = sample.generate(s, params)
        assert got.tokens.shape == (2, 32) and (got.tokens != 103).all(), predictor
    cfg, _ = configured(root, "sample", work, **{"sample.num_strides": 1, "sample.stride": 16,
                                                  "sample.prefix": "the river", "sample.suffix": "old letter"})
    s = experiment.build(cfg, "sample")
    text = s.tokenizer.decode(sample.generate(s, params).tokens[0])
    assert text.startswith("[CLS] the river") and "old letter" in text, text


def test_bert_refuses_what_it_cannot_be(setup, tmp_path):
    root = setup
    for extra, message in [({"diffusion.parameterization": "ar"}, r"'bert' is bidirectional"),
                           ({"diffusion.parameterization": "sedd", "model.time_conditioning": True},
                            r"'bert' sees only tokens"),
                           ({"data.seq_len": 128}, r"data.seq_len 128 exceeds the BERT's 64 learned positions")]:
        cfg, _ = configured(root, "train", tmp_path / "w", **extra)
        with pytest.raises(ValueError, match=message):
            experiment.build(cfg)
    cfg, _ = configured(root, "train", tmp_path / "w2", **{"model.pretrained": str(tmp_path / "nowhere")})
    with pytest.raises(train.StartupError, match=r"model.pretrained: BERT directory .*nowhere does not exist"):
        train.train_and_evaluate(cfg, str(tmp_path / "w2"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"model_type 'gpt2'; expected 'bert'"):
        configured(root, "train", tmp_path / "w4", **{"model.pretrained": str(tmp_path / "bad")})
    with pytest.raises(FileNotFoundError, match=r"No checkpoint in .*evaluate a pretrained BERT"):
        configured(root, "eval", tmp_path / "w3", **{"model.pretrained": ""})


def test_the_padding_mask_reaches_bert_attention(tmp_path):
    """With padded blocks the loss is the one of a BERT that does not attend to the pad keys."""
    cfg = load_config("bert_mdlm_c4", "quick")
    rng = np.random.default_rng(0)
    (tmp_path / "short.jsonl").write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS, 3))}) + "\n"
                                                  for _ in range(40)))  # shorter than a block: padded
    cfg.data.update(source="files", files=(str(tmp_path / "short.jsonl"),), packing="pad", val_fraction=0.5,
                    cache_dir=str(tmp_path / "cache"))
    s = experiment.build(cfg)
    batch = next(iter(data.make_eval_batches(cfg.data, global_batch_size=8, process_index=0, process_count=1)))
    am = np.asarray(batch["attention_mask"])
    assert (0 < am.sum(-1)).all() and (am.sum(-1) < am.shape[1]).all()  # every row padded
    state = task_lib.init_state(s.task, s.optimizer, s.mesh, s.shardings, 0, cfg.data.seq_len)
    ex = task_lib.prepare(s.task, {k: jax.numpy.asarray(v) for k, v in batch.items()}, jax.random.key(0),
                          jax.random.key(1))
    got = task_lib.token_losses(s.task, state.params, ex, train=False).loss
    for mask, same in ((ex["am"], True), (None, False)):
        logits = s.task.model.apply({"params": state.params}, ex["xt"], ex["sigma"], attention_mask=mask)
        want = losses.masked_diffusion_loss(logits, ex["x0"], ex["xt"], ex["weight"], ex["am"], s.task.mask_id).loss
        assert (abs(float(got) - float(want)) < 1e-6) == same
