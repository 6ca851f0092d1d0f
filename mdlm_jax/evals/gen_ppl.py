"""Generative perplexity: score generated samples under an evaluator LM (SPEC section 8).

gen PPL = exp(sum of evaluator NLL / number of scored tokens) over all samples, where each sample
counts up to and including its first EOS: in the evaluator's tokens it is scored as
[EOS] + its first document + [EOS] if the document ended, the leading EOS being context only
(GPT-2's convention for a document start). Long documents go in consecutive non-overlapping windows
of ``context`` tokens (the first token of each window is context only). A low gen PPL alone can
mean dull, repetitive text, so the mean per-sample unigram entropy is always reported beside it,
over the same truncated tokens that are scored: the document tokens and the final EOS if any, not
the leading context token.

Driver: ``python -m mdlm_jax.evals.gen_ppl --evaluator=DIR --samples=samples.jsonl`` where DIR holds a
Hugging Face GPT-2 (``config.json``, ``model.safetensors``) and its tokenizer files, and each line
of the JSONL is one sample as ``mdlm_jax.evals.sample.write_samples`` writes it. A line is scored from
(``record_samples``): its ``token_ids`` as they are when its ``tokenizer`` is 'gpt2' and the
evaluator's vocabulary is GPT-2's; else its ``document`` (the first document's text) retokenized,
with an EOS after it if ``ended``; else (lines with only ``text``: written by hand or by older
versions) its ``text`` retokenized and cut by the same rule (a leading EOS is context, the sample
ends with its first EOS). Without ``--evaluator`` it reports the mean unigram entropy of the
samples' own ``token_ids``, over the same first-document truncation in the model's tokens.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib
from typing import Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mdlm_jax.data.tokenizers import Tokenizer, encode_batch, first_document, get_tokenizer, gpt2_tokenizer, reads_files
from mdlm_jax.models.gpt2 import load_hf_gpt2

# GPT-2's vocabulary: token ids written by a 'gpt2' model are scored as they are under it.
GPT2_VOCAB_SIZE, GPT2_EOS_ID = 50257, 50256
# What the reported entropy is taken over, in the printed report.
EVALUATOR_ENTROPY = "evaluator tokens of each sample's first document and its EOS (the scored tokens)"
MODEL_ENTROPY = "model tokens ('token_ids') of each sample's first document and its EOS"


class GenPPL(NamedTuple):
    ppl: float  # exp(total NLL / num_tokens)
    entropy: float  # mean per-sample unigram entropy of the counted tokens, nats
    num_tokens: int  # scored tokens


class _Specials(NamedTuple):
    """BOS/EOS ids for ``first_document`` where there is no tokenizer object (the evaluator's ids)."""
    bos_id: int
    eos_id: int


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


def counted_tokens(token_ids, tokenizer) -> np.ndarray:
    """The tokens a sample counts with, (n,) or (n + 1,) int64: its first document (n tokens,
    ``first_document``: a leading BOS is context and dropped) and then its EOS if it has one.
    ``token_ids`` (L,) are in ``tokenizer``'s ids (anything with ``bos_id`` and ``eos_id``)."""
    doc, ended = first_document(token_ids, tokenizer)
    return np.asarray(doc + [tokenizer.eos_id] * ended, np.int64)


def scored_sequence(token_ids, eos_id: int) -> np.ndarray:
    """The sequence one sample is scored on, from the sample in the evaluator's ids (L,):
    [eos_id] + ``counted_tokens`` with BOS = EOS = eos_id, int64 (n + 1,) or (n + 2,). Position 0
    is context only; a leading eos_id in the sample is that context, not the end of a document."""
    return np.concatenate([np.asarray([eos_id], np.int64), counted_tokens(token_ids, _Specials(eos_id, eos_id))])


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
    """Gen PPL of samples in the evaluator's token ids, with their mean unigram entropy.

    Each sample (L_i,) becomes its ``scored_sequence`` ([eos_id] + first document + [eos_id] if
    it ended) and is split into windows of ``context`` tokens; window tokens 1..n-1 are scored
    given the ones before them. Windows are batched into fixed (batch_size, context) arrays
    (right-padded, weight 0) so the scorer compiles once. The entropy of each sample is taken
    over the same truncated tokens (the scored sequence without its leading context token).
    Returns GenPPL(ppl = exp(total NLL / num_tokens), entropy (nats), num_tokens).
    """
    sequences = [scored_sequence(s, eos_id) for s in samples_token_ids]
    windows = [w for seq in sequences for w in scoring_windows(seq, context)]
    if not windows:
        raise ValueError("No sample has a token to score: every first document is empty and has no EOS.")
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
    entropy = mean_unigram_entropy([seq[1:] for seq in sequences])
    return GenPPL(math.exp(total_nll / total_tokens), entropy, total_tokens)


def retokenize(texts: Sequence[str], tokenizer: Tokenizer) -> list[list[int]]:
    """Each text as the evaluator's token ids (batched ``encode``; no BOS/EOS added)."""
    return [[int(i) for i in ids] for ids in encode_batch(tokenizer, list(texts))]


def is_gpt2_vocabulary(tokenizer: Tokenizer) -> bool:
    """Whether ``tokenizer`` has GPT-2's vocabulary (its size and EOS id), so 'gpt2' ids need no retokenizing."""
    return tokenizer.vocab_size == GPT2_VOCAB_SIZE and tokenizer.eos_id == GPT2_EOS_ID


def record_samples(records: Sequence[dict], tokenizer: Tokenizer) -> tuple[list[list[int]], list[str]]:
    """Each JSONL record as one sample in the evaluator's (``tokenizer``'s) ids, ready for
    ``generative_perplexity``, and the field it came from ('token_ids', 'document' or 'text').

    'token_ids' are taken as they are (no decode/retokenize round trip) when the record's
    'tokenizer' is 'gpt2' and the evaluator's vocabulary is GPT-2's. Otherwise 'document' is
    retokenized and framed as [EOS] + document + [EOS] if 'ended'. Records with only 'text' have
    it retokenized whole; ``scored_sequence`` then applies the first-EOS rule to it.
    """
    direct = is_gpt2_vocabulary(tokenizer)
    sources, texts = [], []
    for n, record in enumerate(records):
        if direct and record.get("tokenizer") == "gpt2" and "token_ids" in record:
            sources.append("token_ids")
        elif "document" in record:
            if "ended" not in record:
                raise ValueError(f"Sample {n} has a 'document' but no 'ended': write both (as "
                                 "mdlm_jax.evals.sample does) or only 'text'.")
            sources.append("document")
            texts.append(record["document"])
        elif "text" in record:
            sources.append("text")
            texts.append(record["text"])
        else:
            raise ValueError(f"Sample {n} has no 'document' or 'text' (nor GPT-2 'token_ids'): nothing to score.")
    encoded = iter(retokenize(texts, tokenizer))
    eos = tokenizer.eos_id
    samples = []
    for record, source in zip(records, sources):
        if source == "token_ids":
            samples.append([int(i) for i in record["token_ids"]])
        elif source == "document":
            # The leading EOS stands for the context BOS, so a document that opens with the literal
            # text of an EOS is not mistaken for that context token.
            samples.append([eos] + next(encoded) + [eos] * bool(record["ended"]))
        else:
            samples.append(next(encoded))
    return samples, sources


def _model_tokenizer(name: str, path: str) -> Tokenizer:
    """The tokenizer a sample's 'tokenizer' field names, for its BOS/EOS ids."""
    try:
        return get_tokenizer(name, path=path) if reads_files(name) else get_tokenizer(name)
    except FileNotFoundError as e:
        raise SystemExit(f"The samples' tokenizer {name!r} reads its vocabulary from files: pass "
                         f"--tokenizer_path=DIR or put it in the Hugging Face cache ({e})") from e


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluator", default="",
                        help="local HF GPT-2 directory (weights + tokenizer); without it only the entropy of "
                             "the samples' own 'token_ids' (first document and its EOS) is reported")
    parser.add_argument("--samples", required=True,
                        help="JSONL, one sample a line: 'tokenizer', 'token_ids', 'document', 'ended', 'text' "
                             "(as mdlm_jax.evals.sample writes them), or at least 'text'")
    parser.add_argument("--tokenizer_path", default="",
                        help="without --evaluator: the directory of the samples' tokenizer where it reads files "
                             "(gpt2, bert-base-uncased); default: the local Hugging Face cache")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in pathlib.Path(args.samples).read_text().splitlines() if line.strip()]
    if not args.evaluator:
        for n, record in enumerate(records):
            missing = [f for f in ("token_ids", "tokenizer") if f not in record]
            if missing:
                raise SystemExit(f"{args.samples}: sample {n} has no {missing}. Without --evaluator every line needs "
                                 "'token_ids' and the 'tokenizer' that wrote them (to find the first document); "
                                 "pass --evaluator to score its text instead.")
        tokenizers = {name: _model_tokenizer(name, args.tokenizer_path) for name in {r["tokenizer"] for r in records}}
        entropy = mean_unigram_entropy([counted_tokens(r["token_ids"], tokenizers[r["tokenizer"]]) for r in records])
        report = dict(entropy=entropy, entropy_tokens=MODEL_ENTROPY, samples=len(records))
        print(json.dumps(report))
        return report
    model, params = load_hf_gpt2(args.evaluator)
    tokenizer = gpt2_tokenizer(str(args.evaluator))
    samples, sources = record_samples(records, tokenizer)
    result = generative_perplexity(model, params, samples, eos_id=tokenizer.eos_id, context=args.context,
                                   batch_size=args.batch_size)
    report = dict(gen_ppl=result.ppl, entropy=result.entropy, entropy_tokens=EVALUATOR_ENTROPY,
                  tokens=result.num_tokens, samples=len(records), scored_from=dict(collections.Counter(sources)))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
