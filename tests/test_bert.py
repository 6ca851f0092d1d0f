"""The Flax BERT (models/bert.py) against transformers' BertForMaskedLM / BertModel, and the HF
directory reader / writer (interop/hf_bert.py)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from mdlm_jax import parallel
from mdlm_jax.interop.hf_bert import load_hf_bert, save_hf_bert
from mdlm_jax.models import bert
from tests_util import BERT_DIR, needs_bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
TOKENS = np.random.default_rng(0).integers(0, 99, size=(2, 12)).astype(np.int32)
MASK = np.ones((2, 12), np.int32)
MASK[1, 8:] = 0  # the second row's last 4 keys are padding


def _hf(cls):
    """A seeded random HF model with every parameter perturbed (biases and LayerNorms off their
    zeros / ones init, so a swapped or dropped one shows in the outputs)."""
    torch.manual_seed(0)
    model = cls(transformers.BertConfig(**TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _hf_out(model, mask=None, field="logits"):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(TOKENS, dtype=torch.long),
                    attention_mask=None if mask is None else torch.tensor(mask))
    return getattr(out, field).numpy()


def _ours(config, params, mask=None, method=None):
    model = bert.Bert(config)
    mask = None if mask is None else jnp.asarray(mask)
    if method == "encode":
        return np.asarray(model.apply({"params": params}, jnp.asarray(TOKENS), mask, method=bert.Bert.encode))
    return np.asarray(model.apply({"params": params}, jnp.asarray(TOKENS), attention_mask=mask))


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bert_mlm")
    model = _hf(transformers.BertForMaskedLM)
    model.save_pretrained(directory)
    return directory, model


def test_masked_lm_matches_transformers(mlm_dir):
    directory, hf = mlm_dir
    config, params, info = load_hf_bert(directory)
    assert config == bert.BertConfig(**TINY)
    assert info == {"architecture": "BertForMaskedLM", "weights": "model.safetensors", "initialised": []}
    for mask in (None, MASK):
        np.testing.assert_allclose(_ours(config, params, mask), _hf_out(hf, mask), atol=1e-5, rtol=0)
    model = bert.Bert(config)
    hidden = model.apply({"params": params}, jnp.asarray(TOKENS), jnp.zeros(2), return_hidden=True)
    assert hidden.shape == (2, 12, 32) and hidden.dtype == jnp.float32
    np.testing.assert_allclose(bert.project_hidden(model, params, hidden), _ours(config, params), atol=1e-6, rtol=0)


def test_export_round_trip_and_transformers_loads_it(mlm_dir, tmp_path):
    directory, hf = mlm_dir
    config, params, _ = load_hf_bert(directory)
    save_hf_bert(tmp_path, config, params)
    again, params2, _ = load_hf_bert(tmp_path)
    assert again == config
    flat, flat2 = traverse_util.flatten_dict(params), traverse_util.flatten_dict(params2)
    assert flat.keys() == flat2.keys() and all(np.array_equal(flat[k], flat2[k]) for k in flat)
    # The same tensor names as save_pretrained writes (no tied decoder duplicates).
    assert sorted(load_file(tmp_path / "model.safetensors")) == sorted(load_file(directory / "model.safetensors"))
    loaded, loading = transformers.BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not (loading["missing_keys"] or loading["unexpected_keys"] or loading["mismatched_keys"]), loading
    np.testing.assert_allclose(_hf_out(loaded.eval(), MASK), _hf_out(hf, MASK), atol=0, rtol=0)


def test_bare_bert_model_gets_an_initialised_head(tmp_path):
    hf = _hf(transformers.BertModel)
    hf.save_pretrained(tmp_path / "bare")
    config, params, info = load_hf_bert(tmp_path / "bare")
    assert info["architecture"] == "BertModel"
    assert info["initialised"] == [n for n in bert.hf_names(config) if n.startswith("cls.")]
    assert len(info["initialised"]) == 5
    for mask in (None, MASK):
        np.testing.assert_allclose(_ours(config, params, mask, "encode"), _hf_out(hf, mask, "last_hidden_state"),
                                   atol=1e-5, rtol=0)
    head = params["cls"]["predictions"]
    assert np.all(head["transform"]["LayerNorm"]["scale"] == 1) and not head["transform"]["LayerNorm"]["bias"].any()
    assert not head["bias"].any() and not head["transform"]["dense"]["bias"].any()
    assert abs(head["transform"]["dense"]["kernel"].std() - 0.02) < 0.005
    # The initialised head, exported, is a BertForMaskedLM that computes our logits.
    save_hf_bert(tmp_path / "mlm", config, params)
    loaded = transformers.BertForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    np.testing.assert_allclose(_ours(config, params, MASK), _hf_out(loaded, MASK), atol=1e-5, rtol=0)


def test_pytorch_model_bin_in_the_legacy_layout(mlm_dir, tmp_path):
    """bert-base-uncased's own files: torch pickles with the tied decoder tensors and LayerNorm
    gamma / beta names."""
    directory, hf = mlm_dir
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in hf.state_dict().items()}
    assert "cls.predictions.decoder.weight" in state and "bert.embeddings.LayerNorm.gamma" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    config, params, info = load_hf_bert(tmp_path)
    assert info["weights"] == "pytorch_model.bin" and not info["initialised"]
    np.testing.assert_allclose(_ours(config, params, MASK), _hf_out(hf, MASK), atol=1e-5, rtol=0)


@needs_bert
def test_all_minilm_l6_v2_matches_transformers():
    config, params, info = load_hf_bert(BERT_DIR)
    assert (config.num_hidden_layers, config.hidden_size, info["architecture"]) == (6, 384, "BertModel")
    tokenizer = transformers.AutoTokenizer.from_pretrained(BERT_DIR)
    batch = tokenizer(["A cat sat on the mat.", "Hello world."], padding=True,
                      return_tensors="np")
    hf = transformers.BertModel.from_pretrained(BERT_DIR).eval()
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(batch["input_ids"]),
                  attention_mask=torch.tensor(batch["attention_mask"])).last_hidden_state.numpy()
    got = bert.Bert(config).apply({"params": params}, jnp.asarray(batch["input_ids"]),
                                  jnp.asarray(batch["attention_mask"]), method=bert.Bert.encode)
    assert batch["attention_mask"].min() == 0  # the shorter sentence is padded
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def _write(directory, config=None, tensors=None, source=None):
    directory.mkdir()
    config = json.loads((source / "config.json").read_text()) if config is None else config
    (directory / "config.json").write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, str(directory / "model.safetensors"))
    return directory


@pytest.mark.parametrize("change, match", [
    ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'.*'gelu'"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'.*'absolute'"),
    ({"is_decoder": True}, "is_decoder"),
    ({"model_type": "gpt2"}, "model_type 'gpt2'"),
    ({"architectures": ["GPT2LMHeadModel"]}, "GPT2LMHeadModel"),
    ({"max_position_embeddings": 128}, "max_position_embeddings=128.*64 rows"),
])
def test_bad_configs_are_named(mlm_dir, tmp_path, change, match):
    directory, _ = mlm_dir
    config = dict(json.loads((directory / "config.json").read_text()), **change)
    _write(tmp_path / "bad", config, load_file(directory / "model.safetensors"))
    with pytest.raises(ValueError, match=match):
        load_hf_bert(tmp_path / "bad")


def test_bad_weights_and_files_are_named(mlm_dir, tmp_path):
    directory, _ = mlm_dir
    tensors = load_file(directory / "model.safetensors")
    missing = {k: v for k, v in tensors.items() if k != "bert.encoder.layer.1.output.dense.bias"}
    with pytest.raises(ValueError, match=r"missing \['bert.encoder.layer.1.output.dense.bias'\]"):
        load_hf_bert(_write(tmp_path / "missing", tensors=missing, source=directory))
    wrong = dict(tensors, **{"bert.encoder.layer.0.attention.self.key.weight": np.zeros((32, 31), np.float32)})
    with pytest.raises(ValueError, match=r"self.key.weight: expected \(32, 32\), got \(32, 31\)"):
        load_hf_bert(_write(tmp_path / "wrong", tensors=wrong, source=directory))
    extra = dict(tensors, **{"bert.encoder.layer.2.output.dense.bias": np.zeros(32, np.float32)})
    with pytest.raises(ValueError, match=r"unexpected \['bert.encoder.layer.2.output.dense.bias'\]"):
        load_hf_bert(_write(tmp_path / "extra", tensors=extra, source=directory))
    untied = dict(tensors, **{"cls.predictions.decoder.weight": np.zeros((99, 32), np.float32)})
    with pytest.raises(ValueError, match="decoder.weight differs"):
        load_hf_bert(_write(tmp_path / "untied", tensors=untied, source=directory))
    with pytest.raises(FileNotFoundError, match="model.safetensors.*pytorch_model.bin"):
        load_hf_bert(_write(tmp_path / "noweights", source=directory))
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_bert(tmp_path / "noconfig")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_hf_bert(tmp_path / "nowhere")


def test_logical_axes_and_init():
    config = bert.BertConfig(**TINY)
    variables = jax.eval_shape(bert.Bert(config).init, jax.random.key(0), jnp.asarray(TOKENS))
    leaves = jax.tree_util.tree_leaves(variables, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert len(leaves) == len(bert.hf_names(config)) and all(isinstance(x, nn.Partitioned) for x in leaves)
    rules = dict(parallel.LOGICAL_RULES)
    for leaf in leaves:
        assert set(leaf.names) <= set(rules) | {None}, leaf.names
        mesh_axes = [rules[n] for n in leaf.names if n is not None and rules[n] is not None]
        assert len(mesh_axes) == len(set(mesh_axes)), leaf.names  # no mesh axis used twice
        assert leaf.value.dtype == jnp.float32
    embeddings = bert.Embeddings(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32), True)
    words = nn.meta.unbox(embeddings)["params"]["word_embeddings"]["embedding"]
    assert not words[config.pad_token_id].any() and words[1:].all()  # HF's padding_idx row


def test_numerics_dropout_and_length(mlm_dir):
    config, params, _ = load_hf_bert(mlm_dir[0])
    tokens = jnp.asarray(TOKENS)
    logits = _ours(config, params)
    # LayerNorm removes a common offset of the embeddings; its variance is two-pass as torch's, so
    # the offset costs no digits (one-pass E[x^2] - E[x]^2 is off by 3e-2 here).
    shifted = {**params, "embeddings": {**params["embeddings"], "word_embeddings": {
        "embedding": params["embeddings"]["word_embeddings"]["embedding"] + 100.0}}}
    np.testing.assert_allclose(_ours(config, shifted, method="encode"), _ours(config, params, method="encode"),
                               atol=1e-3, rtol=0)
    low = bert.Bert(config, dtype=jnp.bfloat16).apply({"params": params}, tokens)
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, logits, atol=0.1)
    assert not np.array_equal(low, logits)  # the matmuls did run in bfloat16
    dropped = bert.Bert(config).apply({"params": params}, tokens, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(dropped, logits)
    with pytest.raises(ValueError, match="65 exceeds.*max_position_embeddings=64"):
        bert.Bert(config).apply({"params": params}, jnp.zeros((1, 65), jnp.int32))
