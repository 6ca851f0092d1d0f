"""Tokenizers: a small protocol, the byte tokenizer, one registry, and the mask-token rule.

Every tokenizer is built from local files or from nothing; none is fetched at run time.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """What the pipeline, the samplers and the evaluators need from a tokenizer.

    ``name`` identifies the vocabulary (it keys the token cache, so two tokenizers with different
    vocabularies must not share a name). ``mask_id`` is None when the vocabulary has no mask
    token; ``model_vocab`` then appends one.
    """

    name: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    mask_id: int | None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS/EOS (the packer adds those)."""

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special and out-of-vocabulary ids are skipped."""


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, then BOS = 256, EOS = 257, PAD = 258; no mask token (V = 259)."""

    name = "bytes"
    bos_id = 256
    eos_id = 257
    pad_id = 258
    vocab_size = 259
    mask_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        # Model output may hold specials or the appended mask id: keep only byte ids. A sample
        # can end mid-character, so broken UTF-8 is replaced rather than raised on.
        data = bytes(int(i) for i in ids if 0 <= int(i) < 256)
        return data.decode("utf-8", errors="replace")


# The one registry: later tokenizers (bert, gpt2, text8) add a line here.
TOKENIZERS: dict[str, Callable[..., Tokenizer]] = {
    "bytes": ByteTokenizer,
}


def get_tokenizer(name: str, **kwargs) -> Tokenizer:
    """Builds the tokenizer registered as ``name`` with constructor arguments ``kwargs``."""
    if name not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer {name!r}; choose one of {sorted(TOKENIZERS)}.")
    return TOKENIZERS[name](**kwargs)


def model_vocab(tokenizer: Tokenizer) -> tuple[int, int]:
    """(model vocabulary size, mask id) by SPEC section 1.

    With a mask token (bert: [MASK] = 103) the vocabulary is unchanged; without one (GPT-2,
    bytes) the mask is a new id V and the model's vocabulary is V + 1.
    """
    if tokenizer.mask_id is not None:
        return tokenizer.vocab_size, tokenizer.mask_id
    return tokenizer.vocab_size + 1, tokenizer.vocab_size
