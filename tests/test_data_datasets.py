"""The paper datasets from small fixture files written in each dataset's real on-disk layout:
LM1B's shard files, the OpenWebText archive, text8.zip, and the zero-shot sets; their packings
token for token, splits, the Hugging Face cache, and the errors for missing or bad input.
All offline; the Hugging Face caches are pointed at empty temporary directories."""

import gzip
import io
import json
import lzma
import os
import tarfile
import zipfile

import numpy as np
import pytest
from tests_util import BERT_DIR, GPT2_DIR, data_config, hermetic_data_env, needs_bert, needs_gpt2

from mdlm_jax import data
from mdlm_jax.data import cache, pipeline
from mdlm_jax.data.datasets import owt_clean
from mdlm_jax.data.detokenizers import get_detokenizer
from mdlm_jax.data.formats import SourceError
from mdlm_jax.data.registry import DatasetNotFoundError


E = 50256  # GPT-2's BOS = EOS


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    hermetic_data_env(tmp_path, monkeypatch)


def _rows(blocks, key="input_ids"):
    return np.stack([blocks[i][key] for i in range(len(blocks))])


WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at".split()


def _sentence(rng, i):
    body = " ".join(rng.choice(WORDS) for _ in range(3 + i % 11))
    return f"Item {i} : the company 's shares , he said , rose ( again ) : {body} ."


# ------------------------------------------------------------------------------- LM1B


def _write_lm1b(root, rng, train_files=3, heldout_files=2, lines=40):
    top = root / "1-billion-word-language-modeling-benchmark-r13output"
    train, heldout = top / "training-monolingual.tokenized.shuffled", top / "heldout-monolingual.tokenized.shuffled"
    train.mkdir(parents=True)
    heldout.mkdir()
    texts = {"train": [], "test": []}
    k = 0
    for split, folder, names in (("train", train, [f"news.en-{i:05d}-of-00100" for i in range(1, train_files + 1)]),
                                 ("test", heldout, [f"news.en.heldout-{i:05d}-of-00050" for i in range(heldout_files)])):
        for name in names:
            chunk = [_sentence(rng, k + j) for j in range(lines)]
            k += lines
            if split == "test" and name.endswith("00001-of-00050"):
                chunk[0] += " " + " ".join(["extra"] * 60)  # longer than a 16-token row: truncated
            (folder / name).write_text("".join(s + " \n" for s in chunk))  # trailing space: stripped
            texts[split] += chunk
    return texts


@needs_bert
def test_lm1b_unwrapped_matches_the_official_tokenizer_call(tmp_path):
    transformers = pytest.importorskip("transformers")
    texts = _write_lm1b(tmp_path, np.random.default_rng(0))
    cfg = data_config(tmp_path, "lm1b", path=str(tmp_path), tokenizer="bert-base-uncased", tokenizer_path=BERT_DIR,
               seq_len=16, packing="pad")
    assert data.eval_split_for(cfg) == "test"
    test = data.build_blocks(cfg, "test")
    assert len(test) == len(texts["test"]) == 80  # all heldout files, every line a sentence
    # The official unwrapped row: tokenizer(detok(text), max_length=L, padding='max_length',
    # truncation=True, add_special_tokens=True) -> [CLS] ... [SEP] [PAD]...
    reference = transformers.BertTokenizer(os.path.join(BERT_DIR, "vocab.txt"), do_lower_case=True)
    detok = get_detokenizer("lm1b")
    want = reference([detok(t) for t in texts["test"]], max_length=16, padding="max_length", truncation=True)
    np.testing.assert_array_equal(_rows(test), want["input_ids"])
    np.testing.assert_array_equal(_rows(test, "attention_mask"), want["attention_mask"])
    row = test[0]["input_ids"]
    assert row[0] == 101 and 102 in row and (row[list(row).index(102) + 1:] == 0).all()
    assert test.dropped_tokens > 60  # the long sentence was truncated and counted
    assert len(data.build_blocks(cfg, "train")) == 120
    batches = list(data.make_eval_batches(cfg, global_batch_size=32))  # evaluation reads the test split
    assert len(batches) == 3 and batches[0]["input_ids"].shape == (32, 16)


@needs_bert
def test_lm1b_wrapped_variant(tmp_path):
    texts = _write_lm1b(tmp_path, np.random.default_rng(1))
    cfg = data_config(tmp_path, "lm1b", path=str(tmp_path), tokenizer="bert-base-uncased", tokenizer_path=BERT_DIR,
               seq_len=16, packing="wrap")
    bert = data.tokenizer_for(cfg)
    detok = get_detokenizer("lm1b")
    stream = [t for s in texts["train"] for t in bert.encode(detok(s)) + [102]]
    blocks = data.build_blocks(cfg, "train")
    assert len(blocks) == len(stream) // 14
    np.testing.assert_array_equal(blocks[0]["input_ids"], [101] + stream[:14] + [102])
    np.testing.assert_array_equal(blocks[len(blocks) - 1]["input_ids"], [101] + stream[-14 - len(stream) % 14:
                                                                                      len(stream) - len(stream) % 14] + [102])


# ------------------------------------------------------------------------------- OpenWebText


def _owt_docs(n):
    rng = np.random.default_rng(2)
    return [f"document {i}\r\n" + " ".join(rng.choice(WORDS) for _ in range(5 + i % 40)) + "\n\n\n\n\nend.  \n"
            for i in range(n)]


def _write_owt_archive(root, docs, per_subset):
    """openwebtext/urlsf_subset00-<k>_data.xz: xz-compressed tars of .txt files (stored shuffled)."""
    folder = root / "openwebtext"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for k, start in enumerate(range(0, len(docs), per_subset)):
        members = [(f"{start + j:07d}-{(start + j) * 7919 % 10007:05d}.txt", docs[start + j])
                   for j in range(min(per_subset, len(docs) - start))]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for idx in rng.permutation(len(members)):
                name, text = members[idx]
                payload = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        (folder / f"urlsf_subset00-{k + 1}_data.xz").write_bytes(lzma.compress(buf.getvalue()))
    return folder


def _docs_of(tokens, offsets):
    return [bytes(np.asarray(tokens[offsets[d]:offsets[d + 1]], np.uint8)).decode() for d in range(len(offsets) - 1)]


def test_owt_archive_order_cleaning_and_last_n_validation(tmp_path):
    docs = _owt_docs(300)
    _write_owt_archive(tmp_path, docs, per_subset=100)
    cfg = data_config(tmp_path, "owt", path=str(tmp_path), tokenizer="bytes", seq_len=32, owt_val_documents=50)
    expected = [owt_clean(d.replace("\r\n", "\n")) for d in docs]
    assert expected[0].startswith("document 0\n") and expected[0].endswith("\n\nend.")
    train = pipeline.prepared_split(cfg, "train")
    validation = pipeline.prepared_split(cfg, "validation")
    assert _docs_of(*train) == expected[:250]
    assert _docs_of(*validation) == expected[250:]  # exactly the last N documents
    assert data.eval_split_for(cfg) == "validation"
    cfg.owt_val_documents = 300
    with pytest.raises(ValueError, match="last 300 documents of a part that has only 300.*owt_val_documents"):
        pipeline.prepared_split(cfg, "train")


@needs_gpt2
def test_owt_wrapping_hand_checked_with_gpt2(tmp_path):
    # "Hello world" = [15496, 995], "Hi" = [17250]. Train (the first two documents) streams
    # 15496 995 E 17250 E; L = 5 takes pieces of 3: [E 15496 995 E] + [E], the "17250 E" remainder dropped.
    folder = tmp_path / "owt_jsonl"
    folder.mkdir()
    (folder / "part-000.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in
                                                   ["Hello world", "Hi", "Hello world"]))
    cfg = data_config(tmp_path, "owt", path=str(folder), tokenizer="gpt2", tokenizer_path=GPT2_DIR, seq_len=5,
               owt_val_documents=1)
    train = data.build_blocks(cfg, "train")
    np.testing.assert_array_equal(_rows(train), [[E, 15496, 995, E, E]])
    assert train.stats() == dict(documents=2, tokens=3, blocks=1, dropped_tokens=2)
    np.testing.assert_array_equal(_rows(data.build_blocks(cfg, "validation")), [[E, 15496, 995, E, E]])
    assert data.model_vocab(data.tokenizer_for(cfg)) == (50258, 50257)


def test_owt_folder_jsonl_and_parquet_layouts_agree(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    docs = _owt_docs(40)
    txt = tmp_path / "txt"
    (txt / "sub").mkdir(parents=True)
    for i, d in enumerate(docs):
        (txt / "sub" / f"{i:04d}.txt").write_bytes(d.encode())
    cleaned = [owt_clean(d.replace("\r\n", "\n")) for d in docs]
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "owt.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in cleaned))
    (tmp_path / "parquet").mkdir()
    pq.write_table(pa.table({"text": cleaned}), tmp_path / "parquet" / "train-00000-of-00001.parquet")
    results = []
    for layout in ("txt", "jsonl", "parquet"):
        cfg = data_config(tmp_path, "owt", path=str(tmp_path / layout), tokenizer="bytes", seq_len=32,
                   owt_val_documents=4, cache_dir=str(tmp_path / f"cache_{layout}"))
        results.append(_docs_of(*pipeline.prepared_split(cfg, "validation")))
    assert results[0] == results[1] == results[2] == cleaned[-4:]


def test_owt_outer_archive_asks_for_extraction(tmp_path):
    (tmp_path / "openwebtext.tar.xz").write_bytes(b"not really")
    cfg = data_config(tmp_path, "owt", path=str(tmp_path / "openwebtext.tar.xz"), tokenizer="bytes")
    with pytest.raises(DatasetNotFoundError, match="outer archive; extract it first"):
        data.build_blocks(cfg, "train")


# ------------------------------------------------------------------------------- text8


def _write_c4(directory, docs_by_split, shards):
    """allenai/c4's published layout: en/c4-<split>.NNNNN-of-MMMMM.json.gz, one JSON record per line."""
    directory.mkdir(parents=True)
    for split, docs in docs_by_split.items():
        total = 1024 if split == "train" else 8
        for i in range(shards):
            with gzip.open(directory / f"c4-{split}.{i:05d}-of-{total:05d}.json.gz", "wt", encoding="utf-8") as f:
                for d in docs[i::shards]:
                    f.write(json.dumps({"text": d, "timestamp": "2019-04-25T12:57:54Z", "url": "https://x"}) + "\n")
    return {split: [d for i in range(shards) for d in docs[i::shards]] for split, docs in docs_by_split.items()}


def test_c4_shards_from_a_path_and_from_the_hub_cache(tmp_path):
    """Gzipped JSON-lines shards, read in shard order, from data.path and from a Hub snapshot; a
    missing validation part is named."""
    rng = np.random.default_rng(0)
    docs = {"train": [_sentence(rng, i) + "\nSecond line." for i in range(30)],
            "validation": [_sentence(rng, 100 + i) for i in range(9)]}
    expected = _write_c4(tmp_path / "copy" / "c4" / "en", docs, shards=3)
    snapshot = tmp_path / "hf_home" / "hub" / "datasets--allenai--c4" / "snapshots" / "1588ec4" / "en"
    _write_c4(snapshot, docs, shards=3)
    for label, path in (("path", str(tmp_path / "copy")), ("hub", "")):
        cfg = data_config(tmp_path, "c4", path=path, tokenizer="bytes", seq_len=32,
                          cache_dir=str(tmp_path / f"cache_{label}"))
        for split in ("train", "validation"):
            tokens, offsets = pipeline.prepared_split(cfg, split)
            assert _docs_of(tokens, offsets) == expected[split], (label, split)
    for f in (tmp_path / "copy" / "c4" / "en").glob("c4-validation.*"):
        f.unlink()
    cfg = data_config(tmp_path, "c4", path=str(tmp_path / "copy"), tokenizer="bytes", cache_dir=str(tmp_path / "c3"))
    with pytest.raises(DatasetNotFoundError, match=r"no files for the 'validation' part.*c4-\{train,validation\}"):
        pipeline.prepared_split(cfg, "validation")


def test_text8_character_splits_and_chunks(tmp_path):
    rng = np.random.default_rng(4)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ", np.uint8)
    chars = alphabet[rng.integers(0, 27, size=100_000_000, dtype=np.uint8)]
    with zipfile.ZipFile(tmp_path / "text8.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("text8", chars.tobytes())
    cfg = data_config(tmp_path, "text8", path=str(tmp_path / "text8.zip"), tokenizer="text8", seq_len=256,
               packing="chunk")
    ids = np.where(chars == ord(" "), 34, chars - (ord("a") - 8)).astype(np.uint8)
    expected_len = {"train": 351_562, "validation": 19_531, "test": 19_531}  # 90M / 5M / 5M over 256
    for split, start in (("train", 0), ("validation", 90_000_000), ("test", 95_000_000)):
        blocks = data.build_blocks(cfg, split)
        assert len(blocks) == expected_len[split]
        assert blocks.dropped_tokens == {"train": 128, "validation": 64, "test": 64}[split]
        np.testing.assert_array_equal(blocks[0]["input_ids"], ids[start:start + 256])
        last = len(blocks) - 1
        np.testing.assert_array_equal(blocks[last]["input_ids"], ids[start + last * 256:start + (last + 1) * 256])
        np.testing.assert_array_equal(blocks[last]["attention_mask"], np.ones(256))
    assert data.eval_split_for(cfg) == "test"  # the official evaluation split for text8


def test_text8_without_a_copy_names_the_fixes(tmp_path):
    cfg = data_config(tmp_path, "text8", tokenizer="text8", seq_len=256, packing="chunk")
    with pytest.raises(DatasetNotFoundError, match=r"text8 was not found\. Tried: data\.path \(unset\); a download of "
                                                   r"http://mattmahoney\.net/dc/text8\.zip \(not allowed.*"
                                                   r"--config\.data\.path=/path/to/text8\.zip.*allow_download=True"):
        data.build_blocks(cfg, "train")


# ------------------------------------------------------------------------------- zero-shot sets


WIKI_LINES = ["", " = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : "
              "戦場のヴァルキュリア3 ) , is a tactical role @-@ playing video game . \n", "", " = = Gameplay = = \n", "",
              " The game 's 1 @,@ 000 maps were \" large \" . \n"]


def _zero_shot_fixture(tmp_path, name):
    """(data.path, raw records of the evaluation split as the official loader yields them)."""
    if name == "wikitext103":
        folder = tmp_path / "wikitext-103-raw"
        folder.mkdir()
        lines = WIKI_LINES * 30
        (folder / "wiki.valid.raw").write_text("".join(line or "\n" for line in lines))
        (folder / "wiki.test.raw").write_text(" = Test = \n")
        return tmp_path, lines
    if name == "ptb":
        folder = tmp_path / "ptb"
        folder.mkdir()
        sentences = [f" no it was n't black monday N {i} \\/ <unk> company 's $ N million " for i in range(200)]
        (folder / "ptb.valid.txt").write_text("".join(s + "\n" for s in sentences))
        return folder, [s.strip() for s in sentences]
    if name == "lambada":
        passages = [f"\u201cWell,\u201d said passage {i}, \u201cit is done.\u201d She nodded." for i in range(200)]
        path = tmp_path / "lambada_test.jsonl"
        path.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
        return path, passages
    if name == "ag_news":
        folder = tmp_path / "ag_news_csv"
        folder.mkdir()
        rows = [(str(1 + i % 4), f"Fears for T N pension {i}", f"Unions say they are 'disappointed' , again {i} .")
                for i in range(200)]
        (folder / "test.csv").write_text("".join(",".join(f'"{c}"' for c in r) + "\n" for r in rows))
        return folder, [f"{r[1]} {r[2]}" for r in rows]
    if name == "pubmed":
        folder = tmp_path / "pubmed-dataset"
        folder.mkdir()
        records = [{"article_id": str(i), "article_text": [f"patients ( n = {i} ) were enrolled .", "the mean age was 45 ."],
                    "abstract_text": ["<S> x </S>"], "section_names": ["intro"]} for i in range(200)]
        (folder / "val.txt").write_text("".join(json.dumps(r) + "\n" for r in records))
        return tmp_path, ["\n".join(r["article_text"]) for r in records]
    raise AssertionError(name)


@needs_gpt2
@pytest.mark.parametrize("name,detokenizer", [("wikitext103", "wikitext"), ("ptb", "ptb"), ("lambada", "lambada"),
                                              ("ag_news", "wikitext+lm1b"), ("pubmed", "wikitext+lm1b")])
def test_zero_shot_sets_from_their_public_layouts(tmp_path, name, detokenizer):
    path, records = _zero_shot_fixture(tmp_path, name)
    cfg = data_config(tmp_path, name, path=str(path), tokenizer="gpt2", tokenizer_path=GPT2_DIR, seq_len=64, packing="wrap")
    gpt2 = data.tokenizer_for(cfg)
    detok = get_detokenizer(detokenizer)
    split = data.eval_split_for(cfg)
    assert split == {"ag_news": "test", "lambada": "test"}.get(name, "validation")
    tokens, offsets = pipeline.prepared_split(cfg, split, tokenizer=gpt2)
    # WikiText keeps its blank rows as documents (each adds a lone EOS to the stream, as officially).
    assert len(offsets) - 1 == len(records)
    for d in (0, 1, 3, len(records) - 1):
        text = records[d] if records[d].strip() else ""
        assert list(tokens[offsets[d]:offsets[d + 1]]) == (gpt2.encode(detok(text)) if text else [])
    blocks = data.build_blocks(cfg, split)
    stream = [t for d in range(len(records)) for t in list(tokens[offsets[d]:offsets[d + 1]]) + [E]]
    np.testing.assert_array_equal(blocks[1]["input_ids"], [E] + stream[62:124] + [E])


def test_hf_datasets_cache_is_used_when_no_path_is_given(tmp_path):
    pa = pytest.importorskip("pyarrow")
    build = tmp_path / "hf_home" / "datasets" / "wikitext" / "wikitext-103-raw-v1" / "0.0.0" / "0123abcd"
    build.mkdir(parents=True)
    rows = [line for line in WIKI_LINES]
    with pa.OSFile(str(build / "wikitext-validation.arrow"), "wb") as sink:
        table = pa.table({"text": rows})
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=3)
    cfg = data_config(tmp_path, "wikitext103", tokenizer="bytes", seq_len=16)
    tokens, offsets = pipeline.prepared_split(cfg, "validation")
    detok = get_detokenizer("wikitext")
    assert _docs_of(tokens, offsets) == [detok(r) if r.strip() else "" for r in rows]
    with pytest.raises(DatasetNotFoundError, match=r"'test' part"):
        pipeline.prepared_split(cfg, "test")


def test_missing_or_wrong_paths_are_explained(tmp_path):
    cfg = data_config(tmp_path, "wikitext103", tokenizer="bytes")
    with pytest.raises(DatasetNotFoundError, match=r"WikiText-103 was not found\. Tried: data\.path \(unset\); the "
                                                   r"Hugging Face datasets cache .*--config\.data\.path=/path/to/"
                                                   r"wikitext-103-raw.*python -m mdlm_jax\.data prepare"):
        data.build_blocks(cfg, "validation")
    cfg.path = str(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=r"data\.path '.*nowhere' does not exist"):
        data.build_blocks(cfg, "validation")
    cfg = data_config(tmp_path, "lm1b", path=str(tmp_path), tokenizer="bytes")
    with pytest.raises(DatasetNotFoundError, match=r"does not hold the expected layout: 1-billion-word"):
        data.build_blocks(cfg, "train")
    cfg = data_config(tmp_path, "lambada", path=str(_zero_shot_fixture(tmp_path, "lambada")[0]), tokenizer="bytes")
    with pytest.raises(ValueError, match=r"LAMBADA has no 'train' split; it has \['test'\] \(it is an evaluation-only"):
        data.make_train_iterator(cfg, global_batch_size=2, seed=0)


# ------------------------------------------------------------------------------- bad input


def test_empty_invalid_and_huge_documents(tmp_path, monkeypatch):
    folder = tmp_path / "owt"
    folder.mkdir()
    huge = " ".join(f"w{i}" for i in range(20_000))  # about 110k bytes, several tokenizer batches
    files = {"000.txt": b"first document", "001.txt": b"", "002.txt": b"  \n\n ", "003.txt": b"bad \xff byte",
             "004.txt": huge.encode(), "005.txt": b"last one", "006.txt": b"validation"}
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    monkeypatch.setattr(cache, "_BATCH_CHARACTERS", 1000)  # the huge document alone overflows a batch
    cfg = data_config(tmp_path, "owt", path=str(folder), tokenizer="bytes", seq_len=64, owt_val_documents=1)
    meta = pipeline.prepare_part(cfg, "all")
    assert (meta["documents"], meta["empty_documents"], meta["invalid_utf8_documents"]) == (5, 2, 1)
    tokens, offsets = pipeline.prepared_split(cfg, "train")
    assert _docs_of(tokens, offsets) == ["first document", "bad \ufffd byte", huge, "last one"]
    blocks = data.build_blocks(cfg, "train")
    stream = "\x01".join(["first document", "bad \ufffd byte", huge, "last one"]).encode() + b"\x01"
    flat = b"".join(bytes(np.where(r[1:-1] == 257, 1, r[1:-1]).astype(np.uint8)) for r in _rows(blocks))
    assert flat == stream[:len(flat)] and len(stream) - len(flat) == blocks.dropped_tokens < 62


def test_truncated_and_corrupt_files_are_named(tmp_path):
    docs = _owt_docs(20)
    folder = _write_owt_archive(tmp_path / "a", docs, per_subset=10)
    subset = folder / "urlsf_subset00-2_data.xz"
    subset.write_bytes(subset.read_bytes()[:-40])
    cfg = data_config(tmp_path, "owt", path=str(folder), tokenizer="bytes", owt_val_documents=2)
    with pytest.raises(SourceError, match=r"Cannot read .*urlsf_subset00-2_data\.xz.*truncated or corrupt"):
        pipeline.prepare_part(cfg, "all")
    assert not os.path.exists(cache.part_dir(cfg.cache_dir, "owt", "bytes", "none", "all"))  # nothing half-written
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "owt.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "cut sho')
    cfg = data_config(tmp_path, "owt", path=str(tmp_path / "j"), tokenizer="bytes", cache_dir=str(tmp_path / "c2"))
    with pytest.raises(SourceError, match=r"owt\.jsonl:2: not valid JSON.*truncated"):
        pipeline.prepare_part(cfg, "all")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "text8.zip").write_bytes(b"PK\x03\x04 truncated")
    cfg = data_config(tmp_path, "text8", path=str(tmp_path / "z"), tokenizer="text8", cache_dir=str(tmp_path / "c3"))
    with pytest.raises(SourceError, match=r"text8\.zip as zip_member"):
        pipeline.prepare_part(cfg, "all")


def test_damaged_or_foreign_cache_is_refused(tmp_path):
    folder = _write_owt_archive(tmp_path / "a", _owt_docs(30), per_subset=10)
    cfg = data_config(tmp_path, "owt", path=str(folder), tokenizer="bytes", seq_len=16, owt_val_documents=5)
    data.build_blocks(cfg, "train")
    other = _write_owt_archive(tmp_path / "b", _owt_docs(31), per_subset=10)
    cfg.path = str(other)
    with pytest.raises(ValueError, match=r"was built from other OpenWebText files.*delete it or set data\.cache_dir"):
        data.build_blocks(cfg, "train")
    cfg.path = ""  # a host without the raw files reads the prepared cache
    assert len(data.build_blocks(cfg, "train")) > 0
    tokens_bin = os.path.join(cache.part_dir(cfg.cache_dir, "owt", "bytes", "none", "all"), "tokens.bin")
    with open(tokens_bin, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="is damaged: tokens.bin holds 100 bytes"):
        data.build_blocks(cfg, "train")


# ------------------------------------------------------------------------------- shards and resumption


def test_host_shards_are_disjoint_and_cover_and_resume_exactly(tmp_path):
    folder = _write_owt_archive(tmp_path, _owt_docs(200), per_subset=50)
    cfg = data_config(tmp_path, "owt", path=str(folder), tokenizer="bytes", seq_len=32, owt_val_documents=20)
    n = len(data.build_blocks(cfg, "train"))
    assert n >= 16
    whole = next(data.make_train_iterator(cfg, global_batch_size=16, seed=5))
    parts = [next(data.make_train_iterator(cfg, global_batch_size=16, seed=5, process_index=p, process_count=2))
             for p in range(2)]
    rows = [set(map(tuple, p["input_ids"].tolist())) for p in parts]
    assert not rows[0] & rows[1] and rows[0] | rows[1] == set(map(tuple, whole["input_ids"].tolist()))
    it = data.make_train_iterator(cfg, global_batch_size=4, seed=5, process_index=1, process_count=2)
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    fresh = data.make_train_iterator(cfg, global_batch_size=4, seed=5, process_index=1, process_count=2)
    fresh.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(fresh)["input_ids"], want["input_ids"])


def test_shard_ranges_cover_every_unit_once():
    for units in (1, 5, 7, 100):
        for shards in (1, 2, 3, 8):
            ranges = [cache.shard_range(units, s, shards) for s in range(shards)]
            assert ranges[0][0] == 0 and ranges[-1][1] == units
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError, match="shard must lie in"):
        cache.shard_range(4, 2, 2)


def test_reader_merges_complete_shards(tmp_path):
    folder = _write_owt_archive(tmp_path, _owt_docs(60), per_subset=10)
    one = data_config(tmp_path, "owt", path=str(folder), tokenizer="bytes", seq_len=16, owt_val_documents=5,
               cache_dir=str(tmp_path / "one"))
    three = data_config(tmp_path, "owt", path=str(folder), tokenizer="bytes", seq_len=16, owt_val_documents=5,
                 cache_dir=str(tmp_path / "three"))
    metas = [pipeline.prepare_part(three, "all", shard=s, num_shards=3) for s in (2, 0)]
    assert [m["units"] for m in metas] == [[4, 6], [0, 2]]
    with pytest.raises(ValueError, match=r"shards \[1\] of 3 are not complete"):
        cache.merge_shards(cache.part_dir(three.cache_dir, "owt", "bytes", "none", "all"))
    pipeline.prepare_part(three, "all", shard=1, num_shards=3)
    for split in ("train", "validation"):  # the reader merges the three shards on first use
        np.testing.assert_array_equal(_rows(data.build_blocks(three, split)), _rows(data.build_blocks(one, split)))


# ------------------------------------------------------------------------------- the prepare CLI


def _cli(*args, env):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "mdlm_jax.data", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


@needs_gpt2
def test_prepare_cli_two_shards_merged_equal_one(tmp_path):
    folder = _write_owt_archive(tmp_path, _owt_docs(300), per_subset=60)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"))
    common = ["--dataset", "owt", "--tokenizer-path", GPT2_DIR, "--owt-val-documents", "30", "--seq-len", "64"]
    procs = [_cli("prepare", "--source", str(folder), "--out", str(tmp_path / "one"), *common, "--json", env=env)]
    procs += [_cli("prepare", "--source", str(folder), "--out", str(tmp_path / "two"), *common,
                   "--shard", str(s), "--num-shards", "2", env=env) for s in range(2)]  # two "hosts" at once
    one, *shards = [_finish(p) for p in procs]
    assert "owt/all: documents=300, tokens=" in one and "tokens_per_second=" in one
    assert "split validation: documents=30" in one and "dropped_tokens=" in one
    report = json.loads(one.strip().splitlines()[-1])
    assert report["all"]["splits"]["train"]["documents"] == 270
    assert "shard 0 of 2: documents=120" in shards[0] and "shard 1 of 2: documents=180" in shards[1]
    merged = _finish(_cli("merge", "--out", str(tmp_path / "two"), *common, env=env))
    assert "owt/all: documents=300" in merged
    dirs = [cache.part_dir(str(tmp_path / d), "owt", "gpt2", "none", "all") for d in ("one", "two")]
    for name in ("tokens.bin", "offsets.npy"):
        with open(os.path.join(dirs[0], name), "rb") as a, open(os.path.join(dirs[1], name), "rb") as b:
            assert a.read() == b.read()
    bad = _cli("prepare", "--dataset", "ptb", "--out", str(tmp_path / "x"), "--tokenizer-path", GPT2_DIR, env=env)
    out, err = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "Penn Treebank was not found" in err and "--config.data.path=/path/to/ptb" in err


def test_line_files_split_into_byte_ranges_anywhere(tmp_path):
    from mdlm_jax.data import formats

    lines = [f"línea {i} " * (i % 7) + ("\r\n" if i % 5 == 0 else "\r" if i % 11 == 0 else "\n") for i in range(300)]
    path = tmp_path / "news.en-00001-of-00100"
    path.write_bytes("".join(lines).encode())
    stats = formats.ReadStats()
    whole = [r for u in formats.line_units("lines", str(path)) for r in formats.read_unit(u, stats)]
    # Python's text mode (what the official loaders use): \r\n and a lone \r end a line, read as \n.
    with open(path, encoding="utf-8") as f:
        assert whole == f.readlines()
    for unit_bytes in (1, 7, 64, 1000, 4096):
        units = formats.line_units("lines", str(path), unit_bytes=unit_bytes)
        assert [r for u in units for r in formats.read_unit(u, stats)] == whole
    assert stats.invalid_utf8 == 0


def test_describe_a_paper_dataset(tmp_path):
    folder = _write_owt_archive(tmp_path, _owt_docs(40), per_subset=20)
    cfg = data_config(tmp_path, "owt", path=str(folder), tokenizer="bytes", seq_len=32, owt_val_documents=4)
    stats = data.describe(cfg)
    assert stats["eval_split"] == "validation" and stats["model_vocab_size"] == 260
    assert stats["train/documents"] == 36 and stats["validation/documents"] == 4
