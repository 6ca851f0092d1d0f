"""Generative perplexity: score generated samples under an evaluator LM (SPEC section 8).

gen PPL = exp(sum of evaluator NLL / number of scored tokens) over all samples, where each sample
counts up to and including its first EOS and is scored in consecutive non-overlapping windows of
``context`` tokens (the first token of each window is context only). A low gen PPL alone can mean
dull, repetitive text, so the mean per-sample unigram entropy is always reported beside it.

Driver: ``python -m mdlm_jax.gen_ppl --evaluator=DIR --samples=samples.jsonl`` where DIR holds a
Hugging Face GPT-2 (``config.json``, ``model.safetensors``) and its tokenizer files, and each line
of the JSONL has a ``text`` field (as ``mdlm_jax.sample.write_samples`` writes it). Without
``--evaluator`` it reports the mean unigram entropy of the samples' own ``token_ids``.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
from typing import Iterable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdlm_jax.models.gpt2 import load_hf_gpt2

GPT2_EOS = "<|endoftext|>"


class GenPPL(NamedTuple):
    ppl: float  # exp(total NLL / num_tokens)
    entropy: float  # mean per-sample unigram entropy, nats
    num_tokens: int  # scored tokens


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def unigram_entropy(token_ids) -> float:
    """H = -sum_v p_v log p_v (nats), with p_v = count of v / length over ONE sample (0 if empty)."""
    ids = np.asarray(token_ids).ravel()
    if ids.size == 0:
        return 0.0
    _, counts = np.unique(ids, return_counts=True)
    p = counts / ids.size
    return float(-(p * np.log(p)).sum())


def mean_unigram_entropy(samples: Sequence) -> float:
    """Mean of ``unigram_entropy`` over samples (each a 1-D sequence of token ids)."""
    if len(samples) == 0:
        raise ValueError("No samples to take the entropy of.")
    return float(np.mean([unigram_entropy(s) for s in samples]))


def truncate_at_eos(token_ids, eos_id: int) -> np.ndarray:
    """The tokens up to and including the first ``eos_id`` (all of them if there is none)."""
    ids = np.asarray(token_ids, np.int64).ravel()
    hits = np.flatnonzero(ids == eos_id)
    return ids[: hits[0] + 1] if hits.size else ids


def scoring_windows(token_ids: np.ndarray, context: int) -> list[np.ndarray]:
    """Consecutive non-overlapping windows of ``context`` tokens; a window scores len - 1 tokens,
    so windows of one token (nothing to score) are dropped."""
    windows = (token_ids[i:i + context] for i in range(0, len(token_ids), context))
    return [w for w in windows if len(w) > 1]


def _make_scorer(model):
    """jit-compiled (params, tokens (B, C), weights (B, C-1)) -> NLL per row (B,) float32.

    NLL_b = -sum_i w_bi log p(tokens_b,i+1 | tokens_b,<=i); padded targets have weight 0.
    """

    def score(params, tokens, weights):
        logits = model.apply({"params": params}, tokens[:, :-1])
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        target = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        # where(), not a product: a -inf log-prob at a padded target must not become NaN.
        return -jnp.where(weights > 0, target, 0.0).sum(axis=-1)

    return jax.jit(score)


def _check_against_model(model, windows, context: int):
    config = getattr(model, "config", None)
    if config is None:  # a stand-in model without a GPT-2 config: nothing to check against
        return
    if context > config.n_positions:
        raise ValueError(f"context={context} exceeds the evaluator's n_positions={config.n_positions}.")
    lo, hi = min(int(w.min()) for w in windows), max(int(w.max()) for w in windows)
    if lo < 0 or hi >= config.vocab_size:
        raise ValueError(f"Token ids span [{lo}, {hi}], outside the evaluator's vocabulary of {config.vocab_size}: "
                         "retokenize the decoded text with the evaluator's tokenizer.")


def generative_perplexity(model, params, samples_token_ids: Iterable, *, eos_id: int,
                          context: int = 1024, batch_size: int = 8) -> GenPPL:
    """Gen PPL of samples already in the evaluator's token ids, with their mean unigram entropy.

    Each sample is cut after its first ``eos_id`` and split into windows of ``context`` tokens;
    window tokens 1..n-1 are scored given the ones before them. Windows are batched into fixed
    (batch_size, context) arrays (right-padded, weight 0) so the scorer compiles once.
    Entropy is taken over each sample as given (before EOS truncation).
    Returns GenPPL(ppl = exp(total NLL / num_tokens), entropy (nats), num_tokens).
    """
    samples = [np.asarray(s, np.int64).ravel() for s in samples_token_ids]
    windows = [w for s in samples for w in scoring_windows(truncate_at_eos(s, eos_id), context)]
    if not windows:
        raise ValueError("No sample has two or more tokens to score.")
    _check_against_model(model, windows, context)
    scorer = _make_scorer(model)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        tokens = np.zeros((batch_size, context), np.int32)
        weights = np.zeros((batch_size, context - 1), np.float32)
        for row, w in enumerate(chunk):
            tokens[row, :len(w)] = w
            weights[row, :len(w) - 1] = 1.0
        nll = np.asarray(scorer(params, jnp.asarray(tokens), jnp.asarray(weights)), np.float64)
        total_nll += float(nll.sum())  # accumulate across batches in float64
        total_tokens += int(weights.sum())
    return GenPPL(math.exp(total_nll / total_tokens), mean_unigram_entropy(samples), total_tokens)


def retokenize(texts: Iterable[str], tokenizer: Encoder) -> list[list[int]]:
    """Each text as the evaluator's token ids (``tokenizer.encode``; no BOS/EOS added)."""
    return [list(tokenizer.encode(text)) for text in texts]


class GPT2Tokenizer:
    """``encode``/``decode`` over a ``tokenizers.Tokenizer``; ``<|endoftext|>`` in text is its id."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.eos_id = tokenizer.token_to_id(GPT2_EOS)
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def load_gpt2_tokenizer(path) -> GPT2Tokenizer:
    """GPT-2 byte-level BPE from a local directory: ``tokenizer.json``, else ``vocab.json`` and
    ``merges.txt`` (or OpenAI's names ``encoder.json`` and ``vocab.bpe``). Never downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    directory = pathlib.Path(path)
    if (directory / "tokenizer.json").is_file():
        return GPT2Tokenizer(Tokenizer.from_file(str(directory / "tokenizer.json")))
    for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        if (directory / vocab).is_file() and (directory / merges).is_file():
            tok = Tokenizer(models.BPE.from_file(str(directory / vocab), str(directory / merges)))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            tok.add_special_tokens([GPT2_EOS])  # so the literal text maps to its single id
            return GPT2Tokenizer(tok)
    raise FileNotFoundError(f"No GPT-2 tokenizer in {directory}: need tokenizer.json, vocab.json + merges.txt, "
                            "or encoder.json + vocab.bpe.")


def evaluate_texts(texts: Sequence[str], evaluator_dir, *, context: int = 1024, batch_size: int = 8,
                   dtype=jnp.float32) -> GenPPL:
    """Loads the evaluator (model and tokenizer from one local directory) and scores ``texts``."""
    model, params = load_hf_gpt2(evaluator_dir, dtype=dtype)
    tokenizer = load_gpt2_tokenizer(evaluator_dir)
    return generative_perplexity(model, params, retokenize(texts, tokenizer), eos_id=tokenizer.eos_id,
                                 context=context, batch_size=batch_size)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluator", default="",
                        help="local HF GPT-2 directory (weights + tokenizer); without it only the entropy of "
                             "the samples' own 'token_ids' is reported")
    parser.add_argument("--samples", required=True, help="JSONL with a 'text' (and 'token_ids') field per line")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in pathlib.Path(args.samples).read_text().splitlines() if line.strip()]
    if not args.evaluator:
        if any("token_ids" not in r for r in records):
            raise SystemExit(f"{args.samples}: without --evaluator every line needs 'token_ids'.")
        report = dict(entropy=mean_unigram_entropy([r["token_ids"] for r in records]), samples=len(records))
        print(json.dumps(report))
        return report
    texts = [r["text"] for r in records]
    result = evaluate_texts(texts, args.evaluator, context=args.context, batch_size=args.batch_size)
    report = dict(gen_ppl=result.ppl, entropy=result.entropy, tokens=result.num_tokens, samples=len(texts))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
