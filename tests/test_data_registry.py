"""The dataset registry: one look-up for every ``data.source``, datasets registered from outside
the package, and the 'embedded' and 'files' corpora read through the one token cache. Offline."""

import json
import os

import numpy as np
import pytest
from tests_util import data_config

from mdlm_jax import data
from mdlm_jax.data import cache, pipeline, sources
from mdlm_jax.data.tokenizers import ByteTokenizer

BOS, EOS, PAD = 256, 257, 258


@data.register_dataset
class Shouts(data.DocumentDataset):
    """Three splits of 20 short documents, every fifth one blank; evaluated on 'test'."""

    name = "toy_registry_shouts"
    title = "Shouts"
    eval_split = "test"

    def splits(self, data_config):
        return ("train", "validation", "test")

    def documents(self, data_config, split):
        return [f"{split} shout {i}!" if i % 5 else "  \n" for i in range(20)]


def _fail(*args):
    raise AssertionError("re-tokenized despite a cache hit")


def _parts(cache_dir):
    """The cache's part directories (those with a meta.json), relative to ``cache_dir``."""
    return sorted(os.path.relpath(root, cache_dir) for root, _, names in os.walk(cache_dir) if "meta.json" in names)


def _meta(cache_dir, part):
    with open(os.path.join(cache_dir, part, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------- the registry


def test_every_source_resolves_through_one_registry_and_an_unknown_one_lists_all(tmp_path):
    for name in ("embedded", "files", "lm1b", "owt", "text8", "lambada", "toy_registry_shouts"):
        dataset = data.get_dataset(name)
        assert dataset is data.DATASETS[name] and dataset.name == name and isinstance(dataset, data.Dataset)
    assert isinstance(data.get_dataset("toy_registry_shouts"), Shouts)
    listing = r"choose one of \[.*'embedded', 'files', .*'lm1b', .*'toy_registry_shouts'.*\] \(or register one"
    with pytest.raises(ValueError, match=r"Unknown data\.source 'nope'; " + listing):
        data.get_dataset("nope")
    with pytest.raises(ValueError, match=r"Unknown data\.source 'nope'; " + listing):
        data.make_train_iterator(data_config(tmp_path, "nope", tokenizer="bytes"), global_batch_size=2, seed=0)


def test_a_duplicate_or_nameless_dataset_is_refused():
    embedded = data.DATASETS["embedded"]

    class Impostor(data.DocumentDataset):
        name = "embedded"

        def documents(self, data_config, split):
            return ["not the embedded corpus"]

    with pytest.raises(ValueError, match=r"A dataset named 'embedded' is already registered \(EmbeddedCorpus\); "
                                         r"give this one another name"):
        data.register_dataset(Impostor)
    with pytest.raises(ValueError, match=r"'toy_registry_shouts' is already registered \(Shouts\)"):
        data.register_dataset(Shouts())
    assert data.DATASETS["embedded"] is embedded  # the first one stays

    class Nameless(data.DocumentDataset):
        def documents(self, data_config, split):
            return []

    with pytest.raises(ValueError, match=r"Nameless needs a name: the data\.source value"):
        data.register_dataset(Nameless)
    with pytest.raises(TypeError, match=r"register_dataset takes a Dataset"):
        data.register_dataset(lambda: None)
    assert "" not in data.DATASETS


def test_a_registered_dataset_is_split_detokenized_cached_and_packed(tmp_path, monkeypatch):
    cfg = data_config(tmp_path, "toy_registry_shouts", tokenizer="bytes", seq_len=16, packing="pad")
    assert data.eval_split_for(cfg) == "test"
    rows = np.concatenate([b["input_ids"] for b in data.make_eval_batches(cfg, global_batch_size=4)])
    assert len(rows) == 16  # the blank documents were skipped
    np.testing.assert_array_equal(rows[0], [BOS, *b"test shout 1!", EOS, PAD])
    (part,) = _parts(cfg.cache_dir)
    assert part.startswith(os.path.join("toy_registry_shouts", "bytes-none-v1", "test-"))
    meta = _meta(cfg.cache_dir, part)
    assert (meta["dataset"], meta["split"], meta["documents"], meta["empty_documents"]) == (
        "toy_registry_shouts", "test", 16, 4)
    with pytest.raises(ValueError, match=r"Shouts has no 'holdout' split; it has \['test', 'train', 'validation'\]"):
        data.build_blocks(cfg, "holdout")
    with pytest.raises(ValueError, match=r"Shouts is not prepared ahead"):
        data.prepare_part(cfg, "train")
    # data.detokenizer applies to a registered dataset too, and keys its cache.
    monkeypatch.setattr(cache, "encode_batch", _fail)
    cfg.detokenizer = "lambada"  # a leading newline, the text stripped
    with pytest.raises(AssertionError, match="re-tokenized"):
        data.build_blocks(cfg, "test")
    monkeypatch.undo()
    np.testing.assert_array_equal(data.build_blocks(cfg, "test")[0]["input_ids"], [BOS, *b"\ntest shout 1!", EOS])


# ------------------------------------------------------------------------------- embedded and files


def _own_files(tmp_path):
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "a.txt").write_text("\n\n".join(f"Paragraph {i}: " + "words " * (i % 9) for i in range(30)))
    (tmp_path / "own" / "b.jsonl").write_text("".join(json.dumps({"text": f"record {i} caf\u00e9"}) + "\n"
                                                      for i in range(25)))
    return (str(tmp_path / "own"),)


@pytest.mark.parametrize("source", ["embedded", "files"])
def test_embedded_and_files_read_through_the_one_cache(tmp_path, monkeypatch, source):
    cfg = data_config(tmp_path, source, tokenizer="bytes", seq_len=32, val_fraction=0.1,
                      files=_own_files(tmp_path) if source == "files" else ())
    corpus = sources.embedded_corpus() if source == "embedded" else sources.text_files(cfg.files)
    tokenizer = ByteTokenizer()
    got = {}
    for split in ("train", "validation"):
        # What the corpora always gave: the val_fraction split, each document encoded as it is.
        documents = sources.split_documents(corpus.documents, cfg.val_fraction, split)
        pieces = [tokenizer.encode(d) for d in documents]
        tokens, offsets = got[split] = pipeline.prepared_split(cfg, split)
        np.testing.assert_array_equal(tokens, np.concatenate(pieces))
        np.testing.assert_array_equal(offsets, np.cumsum([0] + [len(p) for p in pieces]))
        (part,) = [p for p in _parts(cfg.cache_dir) if os.path.basename(p).startswith(split + "-")]
        assert os.path.dirname(part) == os.path.join(source, "bytes-none-v1")  # cache.py's layout
        meta = _meta(cfg.cache_dir, part)
        assert (meta["dataset"], meta["documents"], meta["tokens"]) == (source, len(documents), offsets[-1])
    monkeypatch.setattr(cache, "encode_batch", _fail)
    for split, (tokens, offsets) in got.items():  # the second load is a cache hit
        again = pipeline.prepared_split(cfg, split)
        np.testing.assert_array_equal(again[0], tokens)
        np.testing.assert_array_equal(again[1], offsets)


def test_changed_files_or_tokenizer_are_tokenized_afresh(tmp_path, monkeypatch):
    cfg = data_config(tmp_path, "files", files=_own_files(tmp_path), tokenizer="bytes", seq_len=32, val_fraction=0.1)
    data.build_blocks(cfg, "train")
    monkeypatch.setattr(cache, "encode_batch", _fail)
    data.build_blocks(cfg, "train")  # unchanged: a hit
    path = tmp_path / "own" / "a.txt"
    path.write_text(path.read_text().replace("Paragraph 3:", "Paragraph three:"))
    with pytest.raises(AssertionError, match="re-tokenized"):
        data.build_blocks(cfg, "train")
    cfg.tokenizer = "text8"
    with pytest.raises(AssertionError, match="re-tokenized"):
        data.build_blocks(cfg, "train")
    monkeypatch.undo()
    data.build_blocks(cfg, "train")
    cfg.tokenizer = "bytes"
    data.build_blocks(cfg, "train")
    # Each got a part of its own beside the first one.
    assert [os.path.dirname(p) for p in _parts(cfg.cache_dir)] == [os.path.join("files", "bytes-none-v1")] * 2 + [
        os.path.join("files", "text8-none-v1")]
