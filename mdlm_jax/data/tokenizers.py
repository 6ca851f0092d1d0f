"""Tokenizers: a small protocol, the byte, text8, GPT-2 and BERT tokenizers, one registry, and the
mask-token rule.

Every tokenizer is built from local files or from nothing. GPT-2 and bert-base-uncased read their
vocabulary from ``data.tokenizer_path`` or from the local Hugging Face cache; they are fetched from
the Hub only when the caller passes ``allow_download=True`` (``data.allow_download``).

Special tokens are never added by ``encode``: the packer adds BOS/EOS (for BERT, ``[CLS]`` and
``[SEP]``) where the protocol puts them, so that one cached token stream serves every packing.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Callable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Tokenizer(Protocol):
    """What the pipeline, the samplers and the evaluators need from a tokenizer.

    ``name`` identifies the vocabulary (it keys the token cache, so two tokenizers with different
    vocabularies must not share a name). ``mask_id`` is None when the vocabulary has no mask
    token; ``model_vocab`` then appends one.

    The decode rule, the same for every tokenizer: BOS and EOS are written as their literal text
    where the vocabulary has one (GPT-2 ``<|endoftext|>``, BERT ``[CLS]`` / ``[SEP]``), so that
    document boundaries in a sample stay visible and ``encode`` maps them back to their ids; pad
    ids (unless the pad is also BOS/EOS, as in GPT-2), the appended mask id and any id outside
    the vocabulary are dropped; every other id is written as its text. The byte and text8
    tokenizers have no text for their specials and drop them all. So ``decode(encode(text)) ==
    text`` for the GPT-2 and byte tokenizers, even where the text holds ``<|endoftext|>``; BERT and
    text8 lower-case. ``first_document`` finds a sample's first document in its ids.
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
        """Text of ``ids`` by the decode rule above (BOS/EOS written where they have text)."""


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """``tokenizer.encode`` of each text as int arrays; uses the tokenizer's own batched (and,
    for the Rust tokenizers, multi-threaded) ``encode_batch`` when it has one."""
    batched = getattr(tokenizer, "encode_batch", None)
    if batched is not None:
        return batched(texts)
    return [np.asarray(tokenizer.encode(t), np.int64) for t in texts]


def first_document(token_ids, tokenizer) -> tuple[list[int], bool]:
    """The first document of one sample: (its token ids, whether an EOS ended it).

    ``token_ids`` (L,) is one sample in ``tokenizer``'s ids (anything with ``bos_id`` and
    ``eos_id``). A leading BOS is dropped: it is context, as every training block starts with
    one. Then come the tokens up to, not including, the first EOS; ``ended`` says whether there
    was one. With BOS == EOS (GPT-2's 50256) only position 0 is taken for the BOS.
    """
    ids = [int(i) for i in np.asarray(token_ids).ravel()]
    if ids and ids[0] == tokenizer.bos_id:
        ids = ids[1:]
    if tokenizer.eos_id in ids:
        return ids[:ids.index(tokenizer.eos_id)], True
    return ids, False


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


class Text8Tokenizer:
    """The official text8 characters: ``[CLS] [SEP] [BOS] [EOS] [MASK] [PAD] [RESERVED] [UNK]`` at
    ids 0-7, then ``a..z`` and space at 8-34 (V = 35, mask 4). Text is lower-cased first; any
    other character is ``[UNK]``."""

    name = "text8"
    SPECIALS = ("[CLS]", "[SEP]", "[BOS]", "[EOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
    CHARACTERS = "abcdefghijklmnopqrstuvwxyz "
    cls_id, sep_id, bos_id, eos_id, mask_id, pad_id, unk_id = 0, 1, 2, 3, 4, 5, 7
    vocab_size = 35

    def __init__(self):
        # One lookup over code points below 128; anything else is [UNK].
        self._table = np.full(128, self.unk_id, np.uint8)
        for i, ch in enumerate(self.CHARACTERS):
            self._table[ord(ch)] = len(self.SPECIALS) + i

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as a uint8 array, vectorised (text8's 100M characters take about a second)."""
        text = text.lower()
        try:
            codes = np.frombuffer(text.encode("ascii"), np.uint8)  # text8 itself is ASCII
        except UnicodeEncodeError:
            codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
            codes = np.where(codes < 128, codes, 0)  # code point 0 maps to [UNK] like any non-letter
        return self._table[codes]

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode_array(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        first = len(self.SPECIALS)
        return "".join(self.CHARACTERS[int(i) - first] for i in ids if first <= int(i) < self.vocab_size)


# --------------------------------------------------------------------------- Hugging Face tokenizers


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` behind the protocol: ``encode`` adds no special tokens (a special
    token's literal text, e.g. ``<|endoftext|>``, still maps to its id, as in ``transformers``)."""

    def __init__(self, tok, *, name: str, bos: str, eos: str, pad: str, mask: str | None):
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.name = name
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        ids = {t: tok.token_to_id(t) for t in (bos, eos, pad) + ((mask,) if mask else ())}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"The {name} vocabulary has no token {missing}: is it the right vocabulary?")
        self.bos_id, self.eos_id, self.pad_id = ids[bos], ids[eos], ids[pad]
        self.mask_id = ids[mask] if mask else None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, np.int64) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        # The protocol's decode rule: pads go (GPT-2's pad is its EOS, which stays), and so do the
        # appended mask id and anything else outside the vocabulary; BOS/EOS keep their text.
        dropped = {self.pad_id} - {self.bos_id, self.eos_id}
        ids = [int(i) for i in ids if 0 <= int(i) < self.vocab_size and int(i) not in dropped]
        return self._tok.decode(ids, skip_special_tokens=False)


def hf_hub_cache() -> str:
    """The Hugging Face Hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    return os.path.join(os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface")), "hub")


def _cached_snapshots(repo_ids: Sequence[str], kind: str = "models") -> list[str]:
    """Snapshot directories of ``repo_ids`` in the local Hub cache, the ``main`` ref first."""
    found = []
    for repo_id in repo_ids:
        repo_dir = os.path.join(hf_hub_cache(), f"{kind}--" + repo_id.replace("/", "--"))
        snapshots = os.path.join(repo_dir, "snapshots")
        if not os.path.isdir(snapshots):
            continue
        names = sorted(os.listdir(snapshots))
        ref = os.path.join(repo_dir, "refs", "main")
        if os.path.isfile(ref):
            with open(ref, encoding="utf-8") as f:
                main = f.read().strip()
            names.sort(key=lambda n: n != main)
        found.extend(os.path.join(snapshots, n) for n in names)
    return found


class _Spec:
    """How to find and load one Hugging Face tokenizer: its Hub ids and file sets in preference order."""

    def __init__(self, name: str, repo_ids: tuple[str, ...], file_sets: tuple[tuple[str, ...], ...],
                 load: Callable[[str, tuple[str, ...]], HFTokenizer]):
        self.name, self.repo_ids, self.file_sets, self.load = name, repo_ids, file_sets, load

    def files_in(self, directory: str) -> tuple[str, ...] | None:
        for files in self.file_sets:
            if all(os.path.isfile(os.path.join(directory, f)) for f in files):
                return files
        return None

    def expected(self) -> str:
        return " or ".join(" + ".join(files) for files in self.file_sets)

    def build(self, path: str = "", allow_download: bool = False) -> HFTokenizer:
        if path:
            directory = os.path.expanduser(str(path))
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"{self.name} tokenizer directory {directory!r} does not exist "
                                        "(data.tokenizer_path / --tokenizer-path).")
            files = self.files_in(directory)
            if files is None:
                raise FileNotFoundError(f"{self.name} tokenizer directory {directory!r} holds no vocabulary: "
                                        f"expected {self.expected()}.")
            return self.load(directory, files)
        tried = []
        for directory in _cached_snapshots(self.repo_ids):
            files = self.files_in(directory)
            if files is not None:
                return self.load(directory, files)
            tried.append(directory)
        if allow_download:
            return self.load(*self._download())
        where = f"the snapshots {tried}" if tried else f"{hf_hub_cache()} (no {' / '.join(self.repo_ids)} there)"
        raise FileNotFoundError(
            f"No local {self.name} tokenizer: data.tokenizer_path is unset and the Hugging Face cache has none "
            f"(looked in {where}). Set --config.data.tokenizer_path=/dir/with/{self.file_sets[0][0]} "
            f"(expected {self.expected()}), or allow a download with --config.data.allow_download=True.")

    def _download(self) -> tuple[str, tuple[str, ...]]:
        from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel

        errors = []
        for repo_id in self.repo_ids:
            try:
                directory = snapshot_download(repo_id, allow_patterns=[f for s in self.file_sets for f in s])
            except Exception as e:  # pylint: disable=broad-except  # network errors come in many types
                errors.append(f"{repo_id}: {type(e).__name__}: {e}")
                continue
            files = self.files_in(directory)
            if files is not None:
                return directory, files
        raise FileNotFoundError(f"Could not download the {self.name} tokenizer ({'; '.join(errors)}); "
                                f"put {self.expected()} in a directory and set data.tokenizer_path.")


def _load_gpt2(directory: str, files: tuple[str, ...]) -> HFTokenizer:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel

    if files == ("tokenizer.json",):
        tok = Tokenizer.from_file(os.path.join(directory, files[0]))
    else:
        # vocab.json + merges.txt (Hugging Face names) or encoder.json + vocab.bpe (OpenAI's): the
        # same byte-level BPE; the merges file opens with a '#version' line.
        with open(os.path.join(directory, files[0]), encoding="utf-8") as f:
            vocab = json.load(f)
        with open(os.path.join(directory, files[1]), encoding="utf-8") as f:
            merges = [tuple(line.split(" ")) for line in f.read().split("\n")
                      if line and not line.startswith("#version")]
        tok = Tokenizer(models.BPE(vocab, merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    # GPT-2 has one special token: BOS = EOS = <|endoftext|> = 50256; PAD is the same id (pads
    # never reach the loss: the attention mask removes them).
    return HFTokenizer(tok, name="gpt2", bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", mask=None)


def _load_bert(directory: str, files: tuple[str, ...]) -> HFTokenizer:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers  # pylint: disable=import-outside-toplevel

    if files == ("tokenizer.json",):
        tok = Tokenizer.from_file(os.path.join(directory, files[0]))
    else:
        # vocab.txt with BertTokenizer's uncased defaults: clean text, split CJK characters,
        # lower-case and strip accents, split on whitespace and punctuation, WordPiece ##.
        with open(os.path.join(directory, files[0]), encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.add_special_tokens([AddedToken(t, special=True) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")])
    # The official code uses [CLS] as BOS and [SEP] as EOS for BERT (it has no BOS/EOS tokens).
    return HFTokenizer(tok, name="bert-base-uncased", bos="[CLS]", eos="[SEP]", pad="[PAD]", mask="[MASK]")


_GPT2 = _Spec("gpt2", ("openai-community/gpt2", "gpt2"),
              (("tokenizer.json",), ("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")), _load_gpt2)
_BERT = _Spec("bert-base-uncased", ("google-bert/bert-base-uncased", "bert-base-uncased"),
              (("vocab.txt",), ("tokenizer.json",)), _load_bert)


def gpt2_tokenizer(path: str = "", allow_download: bool = False) -> HFTokenizer:
    """GPT-2's byte-level BPE (V = 50257, BOS = EOS = 50256, no mask token) from ``path`` (a directory
    with tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe) or the local HF cache."""
    return _GPT2.build(path, allow_download)


def bert_tokenizer(path: str = "", allow_download: bool = False) -> HFTokenizer:
    """bert-base-uncased WordPiece (V = 30522, [CLS] = 101 as BOS, [SEP] = 102 as EOS, [PAD] = 0,
    [MASK] = 103) from ``path`` (a directory with vocab.txt or tokenizer.json) or the local HF cache."""
    return _BERT.build(path, allow_download)


# The one registry. Factories that read files take ``path`` and ``allow_download``.
TOKENIZERS: dict[str, Callable[..., Tokenizer]] = {
    "bytes": ByteTokenizer,
    "text8": Text8Tokenizer,
    "gpt2": gpt2_tokenizer,
    "bert-base-uncased": bert_tokenizer,
}


def get_tokenizer(name: str, **kwargs) -> Tokenizer:
    """Builds the tokenizer registered as ``name`` with constructor arguments ``kwargs``."""
    if name not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer {name!r}; choose one of {sorted(TOKENIZERS)}.")
    return TOKENIZERS[name](**kwargs)


def reads_files(name: str) -> bool:
    """Whether the tokenizer registered as ``name`` loads a vocabulary from files (takes ``path``)."""
    return name in TOKENIZERS and "path" in inspect.signature(TOKENIZERS[name]).parameters


def model_vocab(tokenizer: Tokenizer) -> tuple[int, int]:
    """(model vocabulary size, mask id) by SPEC section 1.

    With a mask token (bert: [MASK] = 103) the vocabulary is unchanged; without one (GPT-2,
    bytes) the mask is a new id V and the model's vocabulary is V + 1.
    """
    if tokenizer.mask_id is not None:
        return tokenizer.vocab_size, tokenizer.mask_id
    return tokenizer.vocab_size + 1, tokenizer.vocab_size
