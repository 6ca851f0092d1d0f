"""Packings: random-access rows of length L over a split's cached tokens (grain data sources).

``wrap`` (SPEC 7, OpenWebText and the zero-shot sets): documents joined by EOS, cut into L - 2
pieces, each block ``[BOS] + piece + [EOS]``. ``pad`` (the LM1B protocol): one document per row,
``[BOS] + tokens[:L-2] + [EOS]`` then PAD, pads masked. ``chunk`` (text8): L consecutive tokens, no
specials. For BERT, BOS/EOS are ``[CLS]``/``[SEP]``.
"""

from __future__ import annotations

import abc

import numpy as np

from mdlm_jax.data.tokenizers import Tokenizer

Batch = dict[str, np.ndarray]


class Blocks(abc.ABC):
    """Random-access rows over cached tokens (grain ``RandomAccessDataSource``-compatible).

    ``self[k]`` is ``{'input_ids': int32 (L,), 'attention_mask': float32 (L,)}``.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, tokenizer: Tokenizer):
        if seq_len < 3:
            raise ValueError(f"seq_len must be at least 3 (BOS + one token + EOS); got {seq_len}.")
        self.tokens, self.offsets, self.seq_len = tokens, np.asarray(offsets, np.int64), seq_len
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
        self.num_documents = len(self.offsets) - 1
        self.num_tokens = int(self.offsets[-1])

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of blocks."""

    @abc.abstractmethod
    def _row(self, index: int) -> Batch:
        """Block ``index``, already bounds-checked."""

    def __getitem__(self, index: int) -> Batch:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"Block {index} out of range for {len(self)} blocks.")
        return self._row(index)

    def stats(self) -> dict[str, int]:
        """Documents, tokens (without specials), blocks and tokens dropped by the packing."""
        return dict(documents=self.num_documents, tokens=self.num_tokens, blocks=len(self),
                    dropped_tokens=self.dropped_tokens)


class WrapBlocks(Blocks):
    """SPEC section 7 wrapping: every document's tokens then EOS, concatenated, cut into pieces of
    L - 2 (the remainder dropped); block k is ``[BOS] + piece_k + [EOS]``, all attended."""

    def __init__(self, tokens, offsets, seq_len, tokenizer):
        super().__init__(tokens, offsets, seq_len, tokenizer)
        self.piece = seq_len - 2
        # The stream has N + D entries; document d's EOS sits at stream position offsets[d+1] + d.
        self._eos_pos = self.offsets[1:] + np.arange(self.num_documents, dtype=np.int64)
        stream = self.num_tokens + self.num_documents
        self._len = stream // self.piece
        self.dropped_tokens = stream - self._len * self.piece

    def __len__(self) -> int:
        return self._len

    def _row(self, index: int) -> Batch:
        pos = np.arange(index * self.piece, (index + 1) * self.piece, dtype=np.int64)
        doc = np.searchsorted(self._eos_pos, pos, side="left")  # the document each position is in
        is_eos = self._eos_pos[doc] == pos
        piece = np.full(self.piece, self.eos_id, np.int32)
        piece[~is_eos] = self.tokens[(pos - doc)[~is_eos]]  # earlier EOSes shift tokens right by doc
        ids = np.concatenate([[self.bos_id], piece, [self.eos_id]]).astype(np.int32)
        return {"input_ids": ids, "attention_mask": np.ones(self.seq_len, np.float32)}


class PadBlocks(Blocks):
    """One document per block: ``[BOS] + tokens[:L-2] + [EOS]`` right-padded with PAD to L;
    attention mask 1 on BOS, tokens and EOS, 0 on pads (the LM1B protocol of SPEC section 7)."""

    def __init__(self, tokens, offsets, seq_len, tokenizer):
        super().__init__(tokens, offsets, seq_len, tokenizer)
        lengths = np.diff(self.offsets)
        self.dropped_tokens = int(np.maximum(lengths - (seq_len - 2), 0).sum())

    def __len__(self) -> int:
        return self.num_documents

    def _row(self, index: int) -> Batch:
        start, stop = self.offsets[index], self.offsets[index + 1]
        body = self.tokens[start:min(stop, start + self.seq_len - 2)]
        n = len(body) + 2
        ids = np.full(self.seq_len, self.pad_id, np.int32)
        ids[0], ids[1:n - 1], ids[n - 1] = self.bos_id, body, self.eos_id
        mask = np.zeros(self.seq_len, np.float32)
        mask[:n] = 1.0
        return {"input_ids": ids, "attention_mask": mask}


class ChunkBlocks(Blocks):
    """The text8 protocol: all tokens back to back cut into chunks of L, no BOS/EOS, no overlap,
    the last partial chunk dropped; all attended."""

    def __init__(self, tokens, offsets, seq_len, tokenizer):
        super().__init__(tokens, offsets, seq_len, tokenizer)
        self._len = self.num_tokens // seq_len
        self.dropped_tokens = self.num_tokens - self._len * seq_len

    def __len__(self) -> int:
        return self._len

    def _row(self, index: int) -> Batch:
        start = self.offsets[0] + index * self.seq_len
        ids = np.asarray(self.tokens[start:start + self.seq_len], np.int32)
        return {"input_ids": ids, "attention_mask": np.ones(self.seq_len, np.float32)}


PACKINGS: dict[str, type[Blocks]] = {"wrap": WrapBlocks, "pad": PadBlocks, "chunk": ChunkBlocks}


def make_blocks(tokens: np.ndarray, offsets: np.ndarray, *, seq_len: int, packing: str,
                tokenizer: Tokenizer) -> Blocks:
    """Blocks of length ``seq_len`` over tokens (N,) with offsets (D + 1,), packed by ``packing``."""
    if packing not in PACKINGS:
        raise ValueError(f"Unknown packing {packing!r}; choose one of {sorted(PACKINGS)}.")
    return PACKINGS[packing](tokens, offsets, seq_len, tokenizer)
