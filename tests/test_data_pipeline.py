"""Data pipeline tests: tokenizers, sources, packing layouts, shuffling, sharding, state and cache.

All offline and on CPU; corpora are small files written into tmp_path.
"""

import json
import os
import re

import ml_collections
import numpy as np
import pytest

from mdlm_jax import data
from mdlm_jax.data import cache, sources
from mdlm_jax.data.packing import make_blocks
from mdlm_jax.data.tokenizers import ByteTokenizer

BOS, EOS, PAD = 256, 257, 258


def _config(tmp_path, files, **overrides):
    cfg = ml_collections.ConfigDict(dict(
        source="files", files=tuple(str(f) for f in files), jsonl_field="text", tokenizer="bytes",
        seq_len=16, packing="wrap", val_fraction=0.1, cache_dir=str(tmp_path / "cache")))
    cfg.update(overrides)
    return cfg


def _write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


@pytest.fixture
def corpus_cfg(tmp_path):
    """40 random documents -> about 40 distinct wrapped training blocks of 16 tokens."""
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz "), size=10 + i % 9)) for i in range(40)]
    return _config(tmp_path, [_write_jsonl(tmp_path / "corpus.jsonl", texts)])


def _rows(batch):
    return [tuple(r) for r in batch["input_ids"].tolist()]


# ------------------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trip_and_specials():
    tok = data.get_tokenizer("bytes")
    text = "Masked diffusion, naïve café — 漢字 ✓"
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids) and tok.decode(ids) == text
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size, tok.mask_id) == (BOS, EOS, PAD, 259, None)
    assert tok.decode([BOS] + ids + [EOS, PAD, 259]) == text  # specials and the mask id are skipped
    assert tok.decode(np.array([0xC3])) == "\ufffd"  # a cut character is replaced, not raised on
    assert isinstance(tok, data.Tokenizer)
    with pytest.raises(ValueError, match="Unknown tokenizer 'nope'.*bytes"):
        data.get_tokenizer("nope")


class _FakeTokenizer:
    name, bos_id, eos_id, pad_id = "fake", 0, 0, 0

    def __init__(self, vocab_size, mask_id):
        self.vocab_size, self.mask_id = vocab_size, mask_id


def test_model_vocab_rule():
    assert data.model_vocab(ByteTokenizer()) == (260, 259)
    assert data.model_vocab(_FakeTokenizer(30522, 103)) == (30522, 103)  # bert: [MASK] kept
    assert data.model_vocab(_FakeTokenizer(50257, None)) == (50258, 50257)  # GPT-2: appended


# ------------------------------------------------------------------------------- packing layouts

# Three documents [1 2 3], [4 5], [6 7 8 9]: 9 tokens + 3 EOS = a stream of 12.
_TOKENS = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9], np.int32)
_OFFSETS = np.array([0, 3, 5, 9], np.int64)


def test_wrap_layout_token_for_token():
    # L = 7 -> pieces of 5: "1 2 3 E 4" | "5 E 6 7 8" | dropped "9 E".
    blocks = make_blocks(_TOKENS, _OFFSETS, seq_len=7, packing="wrap", tokenizer=ByteTokenizer())
    assert len(blocks) == 2
    np.testing.assert_array_equal(blocks[0]["input_ids"], [BOS, 1, 2, 3, EOS, 4, EOS])
    np.testing.assert_array_equal(blocks[1]["input_ids"], [BOS, 5, EOS, 6, 7, 8, EOS])
    assert blocks[0]["input_ids"].dtype == np.int32 and blocks[0]["attention_mask"].dtype == np.float32
    np.testing.assert_array_equal(blocks[1]["attention_mask"], np.ones(7))
    assert blocks.stats() == dict(documents=3, tokens=9, blocks=2, dropped_tokens=2)
    with pytest.raises(IndexError):
        blocks[2]
    # L = 5 -> pieces of 3 divide the stream exactly: the last block ends "9 E" + EOS.
    exact = make_blocks(_TOKENS, _OFFSETS, seq_len=5, packing="wrap", tokenizer=ByteTokenizer())
    assert len(exact) == 4 and exact.dropped_tokens == 0
    np.testing.assert_array_equal(exact[3]["input_ids"], [BOS, 8, 9, EOS, EOS])


def test_pad_layout_and_attention_mask():
    blocks = make_blocks(_TOKENS, _OFFSETS, seq_len=5, packing="pad", tokenizer=ByteTokenizer())
    assert len(blocks) == 3
    ids = np.stack([blocks[i]["input_ids"] for i in range(3)])
    mask = np.stack([blocks[i]["attention_mask"] for i in range(3)])
    np.testing.assert_array_equal(ids, [[BOS, 1, 2, 3, EOS], [BOS, 4, 5, EOS, PAD], [BOS, 6, 7, 8, EOS]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert blocks.dropped_tokens == 1  # the 9 of the last document


def test_packing_errors():
    tok = ByteTokenizer()
    with pytest.raises(ValueError, match="seq_len must be at least 3"):
        make_blocks(_TOKENS, _OFFSETS, seq_len=2, packing="wrap", tokenizer=tok)
    with pytest.raises(ValueError, match="Unknown packing 'concat'"):
        make_blocks(_TOKENS, _OFFSETS, seq_len=8, packing="concat", tokenizer=tok)


# ------------------------------------------------------------------------------- sources and split


def test_split_documents():
    docs = [str(i) for i in range(10)]
    assert sources.split_documents(docs, 0.05, "validation") == ["9"]  # at least one
    assert sources.split_documents(docs, 0.05, "train") == docs[:9]
    assert sources.split_documents(docs, 0.25, "validation") == ["7", "8", "9"]  # ceil(2.5)
    assert sources.split_documents(docs, 0.0, "validation") == [] and sources.split_documents(docs, 0, "train") == docs
    assert len(sources.split_documents([str(i) for i in range(100)], 0.07, "validation")) == 7
    with pytest.raises(ValueError, match="no training documents"):
        sources.split_documents(["only"], 0.5, "train")
    with pytest.raises(ValueError, match="Unknown split"):
        sources.split_documents(docs, 0.1, "test")


def test_text_and_jsonl_sources(tmp_path):
    (tmp_path / "b.txt").write_bytes("second file\n".encode())
    (tmp_path / "a.txt").write_bytes(b"first \xff file")  # invalid UTF-8
    lines = [json.dumps({"body": "line one"}), "", json.dumps({"body": ""}), json.dumps({"body": "line two"})]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    corpus = sources.text_files([tmp_path / "*.txt", tmp_path / "d.jsonl"], jsonl_field="body")
    assert corpus.documents == ["first \ufffd file", "second file\n", "line one", "line two"]
    assert corpus.skipped_empty == 1  # the empty jsonl record; blank lines are not documents
    with pytest.raises(ValueError, match=r"d.jsonl:1: the record has no field 'text'"):
        sources.text_files([tmp_path / "d.jsonl"])


def test_own_text_from_directories_lists_and_gzip_split_at_blank_lines(tmp_path):
    import gzip

    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.txt").write_text("First paragraph,\ntwo lines.\n\n\nSecond one.\n  \nThird.\n")
    with gzip.open(tmp_path / "sub" / "b.txt.gz", "wt") as f:
        f.write("Zipped one.\n\nZipped two.\n")
    with gzip.open(tmp_path / "sub" / "deeper" / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "a record"}) + "\n")
    (tmp_path / "sub" / "notes.md").write_text("not a data file")
    listed = [f"{tmp_path / 'a.txt'},{tmp_path / 'sub'}"]  # what --config.data.files=a.txt,sub gives
    assert sources.text_files(listed).documents == ["First paragraph,\ntwo lines.", "Second one.", "Third.\n",
                                                 "Zipped one.", "Zipped two.\n", "a record"]
    assert sources.text_files(listed, txt_split="file").documents[:2] == [
        "First paragraph,\ntwo lines.\n\n\nSecond one.\n  \nThird.\n", "Zipped one.\n\nZipped two.\n"]
    (tmp_path / "bible.txt").write_text("In the beginning\n<|endoftext|>\nAnd the earth\n")
    assert sources.text_files([tmp_path / "bible.txt"], txt_split="<|endoftext|>").documents == [
        "In the beginning\n", "And the earth\n"]
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(FileNotFoundError, match=r"nothing_here' holds no .txt / .jsonl"):
        sources.text_files([tmp_path / "nothing_here"])
    with pytest.raises(ValueError, match="data.txt_split"):
        sources.text_files(listed, txt_split="")


def test_missing_files_are_named(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        sources.text_files([missing])
    with pytest.raises(FileNotFoundError, match=r"nothing\*.txt"):
        sources.text_files([tmp_path / "nothing*.txt"])


def test_binary_files_are_refused(tmp_path):
    npy = tmp_path / "weights.txt"
    with open(npy, "wb") as f:
        np.save(f, np.arange(100))
    with pytest.raises(ValueError, match=r"weights.txt looks binary.*NUL byte \(at byte \d+\).*remove the file"):
        sources.text_files([npy])
    (tmp_path / "utf16.txt").write_bytes("plain words".encode("utf-16"))
    with pytest.raises(ValueError, match=r"utf16.txt looks binary.*NUL.*iconv -f UTF-16 -t UTF-8"):
        sources.text_files([tmp_path / "utf16.txt"])
    # No NUL, but one byte in five a control character.
    (tmp_path / "packed.jsonl").write_bytes(b'{"text": "x"}\n' + b"\x01\x02abcdefgh" * 100)
    with pytest.raises(ValueError, match=r"packed.jsonl looks binary.*200 of its first 1014 bytes \(20%\) are "
                                         r"control characters"):
        sources.text_files([tmp_path / "packed.jsonl"])
    # Real text keeps its tabs, form feeds, ANSI colours, overstrikes (a fifth of its bytes are ESC
    # and backspace) and a stray control.
    text = "col\tumn\f\r\n\x07" + "\x1b[1m\x1b[31mERROR\x1b[0m: N\bNA\bAM\bME\bE\n" * 10
    (tmp_path / "real.txt").write_text(text)
    assert sources.text_files([tmp_path / "real.txt"]).documents == [text]


def test_invalid_utf8_is_counted_and_warned_once_per_file(tmp_path, caplog):
    # 5 invalid bytes: \xff, \xfe on line 2 and a cut emoji \xf0\x9f\x98 (one U+FFFD) on line 3; the
    # real U+FFFD of line 4 is valid UTF-8.
    (tmp_path / "a.txt").write_bytes(b"ok\nfirst \xff\xfe file\n\xf0\x9f\x98 x\n\xef\xbf\xbd real")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "\xc3\xa9\xffb"}\n{"text": "c\xc3"}\n')
    (tmp_path / "c.txt").write_text("clean")
    with caplog.at_level("WARNING"):
        corpus = sources.text_files([tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.txt"])
    assert corpus.documents == ["ok\nfirst \ufffd\ufffd file\n\ufffd x\n\ufffd real", "fine", "\xe9\ufffdb", "c\ufffd",
                                "clean"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert re.search(r"a\.txt: 5 bytes of invalid UTF-8 on 2 line\(s\) \(the first at byte 9, "
                     r"line 2\) were replaced by U\+FFFD.*data\.invalid_utf8='error'", warnings[0])
    assert re.search(r"b\.jsonl: 2 bytes of invalid UTF-8 on 2 line\(s\), each a record \(the first at byte 29, "
                     r"line 2\)", warnings[1])


def test_invalid_utf8_error_names_file_and_offset(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"ok\nfirst \xff file")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "a\xffb"}\n')
    with pytest.raises(ValueError, match=r"a\.txt: invalid UTF-8 at byte 9 \(line 2\).*Re-encode the file"):
        sources.text_files([tmp_path / "a.txt"], invalid_utf8="error")
    with pytest.raises(ValueError, match=r"b\.jsonl: invalid UTF-8 at byte 28 \(line 2\)"):
        sources.text_files([tmp_path / "b.jsonl"], invalid_utf8="error")
    (tmp_path / "c.txt").write_text("clean \ufffd text")
    assert sources.text_files([tmp_path / "c.txt"], invalid_utf8="error").documents == ["clean \ufffd text"]


def test_invalid_utf8_option_reaches_the_reader_past_the_cache(tmp_path, monkeypatch, caplog):
    texts = [f"document {i} " * 4 for i in range(20)]
    path = _write_jsonl(tmp_path / "c.jsonl", texts)
    path.write_bytes(path.read_bytes().replace(b"document 3", b"document \xff"))
    cfg = _config(tmp_path, [path], invalid_utf8="warn")
    with caplog.at_level("WARNING"):
        data.build_blocks(cfg, "train")
    assert sum("c.jsonl: 4 bytes of invalid UTF-8 on 1 line(s)" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()

    def fail(*args):
        raise AssertionError("re-tokenized despite a cache hit")

    monkeypatch.setattr(cache, "encode_batch", fail)
    with caplog.at_level("WARNING"):
        data.build_blocks(cfg, "train")  # served from the cache, and still warned about
    assert sum("c.jsonl: 4 bytes of invalid UTF-8 on 1 line(s)" in r.getMessage() for r in caplog.records) == 1
    cfg.invalid_utf8 = "error"  # the cached tokens of the same files must not be served
    with pytest.raises(ValueError, match=r"c\.jsonl: invalid UTF-8 at byte \d+ \(line 4\)"):
        data.make_train_iterator(cfg, global_batch_size=2, seed=0)
    with pytest.raises(ValueError, match=r"c\.jsonl: invalid UTF-8"):
        data.make_eval_batches(cfg, global_batch_size=2)


def test_invalid_utf8_option_is_checked(tmp_path, corpus_cfg):
    with pytest.raises(ValueError, match=r"data\.invalid_utf8 must be one of \('warn', 'error'\); got 'ignore'"):
        sources.text_files(corpus_cfg.files, invalid_utf8="ignore")
    corpus_cfg.invalid_utf8 = "ignore"
    with pytest.raises(ValueError, match=r"data\.invalid_utf8 must be one of"):
        data.make_train_iterator(corpus_cfg, global_batch_size=2, seed=0)
    embedded = _config(tmp_path, [], source="embedded", invalid_utf8="Warn")
    with pytest.raises(ValueError, match=r"data\.invalid_utf8 must be one of.*got 'Warn'"):
        data.build_blocks(embedded, "train")


def test_empty_files_are_named(tmp_path, corpus_cfg):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\t\n")
    (tmp_path / "blank.jsonl").write_text("\n" + json.dumps({"text": " "}) + "\n\n")
    full = list(corpus_cfg.files)
    with pytest.raises(ValueError, match=r"empty\.txt is empty \(0 bytes\); fill it or remove it from data\.files"):
        sources.text_files(full + [tmp_path / "empty.txt"])
    with pytest.raises(ValueError, match=r"blank\.txt holds only whitespace"):
        sources.text_files([tmp_path / "blank.txt"] + full)
    with pytest.raises(ValueError, match=r"blank\.jsonl has no record with a non-empty 'text' field"):
        sources.text_files(full + [tmp_path / "blank.jsonl"])
    # Alone, it is named too, not reported as "0 documents".
    with pytest.raises(ValueError, match=r"empty\.txt is empty"):
        data.make_train_iterator(_config(tmp_path, [tmp_path / "empty.txt"]), global_batch_size=2, seed=0)


def test_embedded_corpus_is_pydoc_topics():
    from pydoc_data.topics import topics

    corpus = sources.embedded_corpus()
    assert corpus.documents == [topics[k] for k in sorted(topics)] and corpus.skipped_empty == 0


def test_config_errors(tmp_path, corpus_cfg):
    with pytest.raises(ValueError, match=r"Unknown data\.source 'hub'; choose one of \[.*'embedded', 'files'.*'lm1b'"):
        data.build_blocks(_config(tmp_path, [], source="hub"), "train")
    with pytest.raises(ValueError, match=r"divisible by the number of processes \(3\)"):
        data.make_train_iterator(corpus_cfg, global_batch_size=8, seed=0, process_count=3)
    corpus_cfg.seq_len = 4096
    with pytest.raises(ValueError, match="corpus.jsonl.*no blocks of length 4096.*smaller data.seq_len"):
        data.make_train_iterator(corpus_cfg, global_batch_size=8, seed=0)


# ------------------------------------------------------------------------------- cache


def _cache_files(cache_dir):
    """Every file below ``cache_dir``, relative to it, sorted."""
    return sorted(os.path.relpath(os.path.join(root, name), cache_dir)
                  for root, _, names in os.walk(cache_dir) for name in names)


def test_tokens_are_cached_and_reused(tmp_path, corpus_cfg, monkeypatch):
    first = data.build_blocks(corpus_cfg, "train")
    files = _cache_files(corpus_cfg.cache_dir)
    # One complete part of the token cache, keyed by the split's content; no stray temporary files.
    part = os.path.dirname(files[0])
    assert files == [os.path.join(part, f) for f in ("meta.json", "offsets.npy", "tokens.bin")]
    assert re.fullmatch(r"files/bytes-none-v\d+/train-[0-9a-f]{24}", part)
    mtimes = [os.path.getmtime(os.path.join(corpus_cfg.cache_dir, f)) for f in files]

    def fail(*args):
        raise AssertionError("re-tokenized despite a cache hit")

    monkeypatch.setattr(cache, "encode_batch", fail)
    second = data.build_blocks(corpus_cfg, "train")
    assert [os.path.getmtime(os.path.join(corpus_cfg.cache_dir, f)) for f in files] == mtimes
    assert _rows({"input_ids": np.stack([second[i]["input_ids"] for i in range(len(second))])}) == \
        _rows({"input_ids": np.stack([first[i]["input_ids"] for i in range(len(first))])})
    # Other contents -> another key: the validation split is tokenized afresh.
    with pytest.raises(AssertionError, match="re-tokenized"):
        data.build_blocks(corpus_cfg, "validation")


def test_cache_write_is_atomic(tmp_path, corpus_cfg, monkeypatch):
    def killed(f, array):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.np, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        data.build_blocks(corpus_cfg, "train")
    # Neither a torn part nor its temporary directory is left (only the empty parent directories).
    assert _cache_files(corpus_cfg.cache_dir) == []
    assert not [d for _, dirs, _ in os.walk(corpus_cfg.cache_dir) for d in dirs if ".tmp" in d]
    monkeypatch.undo()
    assert len(data.build_blocks(corpus_cfg, "train")) > 0


# ------------------------------------------------------------------------------- training order


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_shuffle_is_deterministic_by_seed_and_new_each_epoch(corpus_cfg):
    blocks = data.build_blocks(corpus_cfg, "train")
    n = len(blocks)
    all_rows = sorted(tuple(blocks[i]["input_ids"].tolist()) for i in range(n))
    assert len(set(all_rows)) == n  # distinct documents make distinct blocks

    # Global batch 1 makes epoch boundaries fall exactly on batches.
    a = [r for b in _take(data.make_train_iterator(corpus_cfg, global_batch_size=1, seed=0), 2 * n)
         for r in _rows(b)]
    b = [r for b in _take(data.make_train_iterator(corpus_cfg, global_batch_size=1, seed=0), 2 * n)
         for r in _rows(b)]
    c = [r for b in _take(data.make_train_iterator(corpus_cfg, global_batch_size=1, seed=1), n) for r in _rows(b)]
    assert a == b
    assert c != a[:n]
    assert sorted(a[:n]) == all_rows and sorted(a[n:]) == all_rows  # each epoch is a permutation
    assert a[:n] != a[n:]  # and a different one


def test_batches_have_the_promised_shapes(corpus_cfg):
    batch = next(data.make_train_iterator(corpus_cfg, global_batch_size=6, seed=0, process_index=1,
                                          process_count=2))
    assert batch["input_ids"].shape == (3, 16) and batch["input_ids"].dtype == np.int32
    assert batch["attention_mask"].shape == (3, 16) and batch["attention_mask"].dtype == np.float32


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_rebuild_the_global_batch(corpus_cfg, process_count):
    steps, global_batch = 8, 8  # 64 rows span more than one epoch of the training blocks
    n = len(data.build_blocks(corpus_cfg, "train"))
    whole = _take(data.make_train_iterator(corpus_cfg, global_batch_size=global_batch, seed=3), steps)
    shards = [_take(data.make_train_iterator(corpus_cfg, global_batch_size=global_batch, seed=3,
                                             process_index=p, process_count=process_count), steps)
              for p in range(process_count)]
    for k in range(steps):
        parts = [shards[p][k] for p in range(process_count)]
        for key in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), whole[k][key])
        if (k + 1) * global_batch <= n:  # inside the first epoch all rows are distinct blocks
            rows = [set(_rows(part)) for part in parts]
            assert sum(len(r) for r in rows) == len(set().union(*rows)) == global_batch  # disjoint, cover


def test_state_round_trip_resumes_exactly(corpus_cfg):
    it = data.make_train_iterator(corpus_cfg, global_batch_size=4, seed=7, process_index=1, process_count=2)
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))
    assert state == {"next_index": 5}
    expected = _take(it, 4)
    fresh = data.make_train_iterator(corpus_cfg, global_batch_size=4, seed=7, process_index=1, process_count=2)
    fresh.set_state(state)
    for got, want in zip(_take(fresh, 4), expected):
        np.testing.assert_array_equal(got["input_ids"], want["input_ids"])


# ------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("packing", ["wrap", "pad"])
def test_eval_batches_are_ordered_padded_and_sharded(tmp_path, packing):
    texts = [f"validation text number {i} " * (1 + i % 3) for i in range(27)]
    cfg = _config(tmp_path, [_write_jsonl(tmp_path / "v.jsonl", texts)], packing=packing, val_fraction=0.5)
    blocks = data.build_blocks(cfg, "validation")
    n = len(blocks)
    assert n % 8  # so that the last batch needs filler rows
    whole = list(data.make_eval_batches(cfg, global_batch_size=8))
    assert len(whole) == len(data.make_eval_batches(cfg, global_batch_size=8)) == -(-n // 8)
    ids = np.concatenate([b["input_ids"] for b in whole])
    mask = np.concatenate([b["attention_mask"] for b in whole])
    np.testing.assert_array_equal(ids[:n], np.stack([blocks[i]["input_ids"] for i in range(n)]))
    np.testing.assert_array_equal(mask[:n], np.stack([blocks[i]["attention_mask"] for i in range(n)]))
    assert (mask[n:] == 0).all() and (ids[n:] == PAD).all()
    halves = [list(data.make_eval_batches(cfg, global_batch_size=8, process_index=p, process_count=2))
              for p in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for k, batch in enumerate(whole):
        np.testing.assert_array_equal(
            np.concatenate([halves[0][k]["input_ids"], halves[1][k]["input_ids"]]), batch["input_ids"])
        assert halves[0][k]["input_ids"].shape == (4, 16)


def test_describe_reports_both_splits(corpus_cfg):
    stats = data.describe(corpus_cfg)
    assert stats["model_vocab_size"] == 260 and stats["mask_id"] == 259
    assert stats["train/documents"] == 36 and stats["validation/documents"] == 4
    train = data.build_blocks(corpus_cfg, "train")
    assert stats["train/blocks"] == len(train)
    # Wrapping keeps every token + EOS except the dropped remainder.
    assert stats["train/tokens"] + 36 == stats["train/blocks"] * 14 + stats["train/dropped_tokens"]
