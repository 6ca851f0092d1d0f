"""The TensorFlow Datasets route: a dataset prepared by tfds in the ArrayRecord format, read
through tfds's random-access data source without TensorFlow.

The copies here are built by tfds itself (a ``GeneratorBasedBuilder`` named like the real one,
``download_and_prepare(file_format='array_record')``), which needs no TensorFlow either. All
offline: the tfds default dir and the Hugging Face caches point at temporary directories."""

import functools
import json
import os
import sys

import numpy as np
import pytest
from tests_util import BERT_DIR, data_config, hermetic_data_env, needs_bert

from mdlm_jax import data
from mdlm_jax.data import cache, pipeline, tfds_source
from mdlm_jax.data.registry import DATASETS, DatasetNotFoundError
from mdlm_jax.data.detokenizers import get_detokenizer

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    hermetic_data_env(tmp_path, monkeypatch)


def build_tfds(data_dir, name, splits, *, fields=("text",), version="1.1.0", config_dir=""):
    """Prepares ``name`` in ``data_dir`` in the ArrayRecord format with tfds itself: ``splits`` maps
    a split to its rows (dicts of the ``fields``), each keyed ``<split>_<i>`` as tfds builders do.
    Returns the version directory."""

    class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({f: tfds.features.Text() for f in fields}))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split, rows) for split, rows in splits.items()}

        def _generate_examples(self, split, rows):
            for i, row in enumerate(rows):
                yield f"{split}_{i}", row

    Fake.name = name
    builder = Fake(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    directory = os.path.join(str(data_dir), name, version)
    if config_dir:  # the layout of a builder with configs: <name>/<config>/<version>
        target = os.path.join(str(data_dir), name, config_dir, version)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(directory, target)
        directory = target
    return directory


WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at café".split()


def _sentences(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(3 + i % 13))
        out.append(f"Item {i} : the company 's shares , he said , rose ( again ) : {body} . ")  # trailing space
    out[3] = "   "  # a blank sentence: stripped to nothing, skipped by both routes
    return out


def _lm1b_tfds(tmp_path, data_dir=None, n_train=60, n_test=40):
    texts = {"train": _sentences(n_train, 0), "test": _sentences(n_test, 1)}
    directory = build_tfds(data_dir or tmp_path / "tfds", "lm1b",
                           {s: [{"text": t} for t in rows] for s, rows in texts.items()})
    return texts, directory


def _write_lm1b_raw(root, texts):
    """The public layout, one file per part, sentences in the given order."""
    top = root / "1-billion-word-language-modeling-benchmark-r13output"
    for folder, name, rows in (("training-monolingual.tokenized.shuffled", "news.en-00001-of-00100", texts["train"]),
                               ("heldout-monolingual.tokenized.shuffled", "news.en.heldout-00000-of-00050",
                                texts["test"])):
        (top / folder).mkdir(parents=True, exist_ok=True)
        (top / folder / name).write_text("".join(t + "\n" for t in rows), encoding="utf-8")


def _tfds_order(directory, split):
    # Straight from tfds, independent of our reader: the data source's index order.
    source = tfds.builder_from_directory(directory).as_data_source(split=split)
    return [source[i]["text"].decode("utf-8") for i in range(len(source))]


def _rows(blocks, key="input_ids"):
    return np.stack([blocks[i][key] for i in range(len(blocks))])


def _docs_of(tokens, offsets):
    return [bytes(np.asarray(tokens[offsets[d]:offsets[d + 1]], np.uint8)).decode() for d in range(len(offsets) - 1)]


@needs_bert
def test_lm1b_from_tfds_equals_the_raw_layout_token_for_token(tmp_path):
    tf_before = "tensorflow" in sys.modules  # building and reading must not import TensorFlow
    texts, directory = _lm1b_tfds(tmp_path)
    order = {s: _tfds_order(directory, s) for s in texts}
    assert sorted(order["test"]) == sorted(texts["test"])  # same sentences, in tfds's (key-hashed) order
    raw_root = tmp_path / "raw"
    _write_lm1b_raw(raw_root, order)  # the same sentences, in the order tfds serves them
    common = dict(tokenizer="bert-base-uncased", tokenizer_path=BERT_DIR, seq_len=128, packing="pad")
    via_tfds = data_config(tmp_path, "lm1b", tfds_data_dir=str(tmp_path / "tfds"), **common)
    via_raw = data_config(tmp_path, "lm1b", path=str(raw_root), **dict(common, cache_dir=str(tmp_path / "cache_raw")))
    bert = data.tokenizer_for(via_tfds)
    for part in ("train", "test"):
        meta = pipeline.prepare_part(via_tfds, part, tokenizer=bert)
        assert meta["origin"] == f"TensorFlow Datasets ({directory})"
        assert meta["documents"] == len(texts[part]) - 1 and meta["empty_documents"] == 1
        pipeline.prepare_part(via_raw, part, tokenizer=bert)
        got = cache.open_part(cache.part_dir(via_tfds.cache_dir, "lm1b", bert.name, "lm1b", part))
        want = cache.open_part(cache.part_dir(via_raw.cache_dir, "lm1b", bert.name, "lm1b", part))
        np.testing.assert_array_equal(got.offsets, want.offsets)
        np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    # The paper's protocol: one sentence per row, [CLS] ... [SEP] padded to 128; evaluation on test.
    assert data.eval_split_for(via_tfds) == "test"
    for split in ("train", "test"):
        got, want = data.build_blocks(via_tfds, split), data.build_blocks(via_raw, split)
        assert len(got) == len(texts[split]) - 1
        np.testing.assert_array_equal(_rows(got), _rows(want))
        np.testing.assert_array_equal(_rows(got, "attention_mask"), _rows(want, "attention_mask"))
    row = data.build_blocks(via_tfds, "test")[0]["input_ids"]
    assert row.shape == (128,) and row[0] == 101 and 102 in row and (row[list(row).index(102) + 1:] == 0).all()
    detok = get_detokenizer("lm1b")
    first = next(t for t in order["test"] if t.strip())
    assert list(row[1:list(row).index(102)]) == list(bert.encode(detok(first.strip())))  # [CLS] ids [SEP]
    # The packed variant reads the same cache.
    via_tfds.packing = via_raw.packing = "wrap"
    packed = data.build_blocks(via_tfds, "train")
    assert len(packed) and packed.dropped_tokens < 128
    np.testing.assert_array_equal(_rows(packed), _rows(data.build_blocks(via_raw, "train")))
    assert ("tensorflow" in sys.modules) == tf_before


def test_lookup_order_path_then_tfds_default_dir(tmp_path, monkeypatch):
    texts, directory = _lm1b_tfds(tmp_path, data_dir=tmp_path / "tfds_default")  # $TFDS_DATA_DIR
    cfg = data_config(tmp_path, "lm1b", tokenizer="bytes", seq_len=64, packing="pad")
    located = DATASETS["lm1b"].locate(cfg)
    assert located.root == directory and located.origin.startswith("TensorFlow Datasets")
    assert sorted(located.parts) == ["test", "train"] and all(u.kind == "tfds" for u in located.parts["test"])
    tokens, offsets = pipeline.prepared_split(cfg, "test")
    detok = get_detokenizer("lm1b")
    assert _docs_of(tokens, offsets) == [detok(t.strip()) for t in _tfds_order(directory, "test") if t.strip()]
    # data.path, when set, comes first.
    _write_lm1b_raw(tmp_path / "raw", texts)
    cfg = data_config(tmp_path, "lm1b", path=str(tmp_path / "raw"), tokenizer="bytes", cache_dir=str(tmp_path / "c2"))
    assert DATASETS["lm1b"].locate(cfg).origin == "data.path"
    # With no default set, tfds's own default is ~/tensorflow_datasets.
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert tfds_source.data_dir_for(data_config(tmp_path, "lm1b")) == (os.path.expanduser("~/tensorflow_datasets"), False)


def test_units_split_shards_into_record_ranges_and_sharded_prepare_matches(tmp_path, monkeypatch):
    texts, directory = _lm1b_tfds(tmp_path, n_train=50, n_test=30)
    spec = DATASETS["lm1b"].tfds
    prepared = tfds_source.find(spec, str(tmp_path / "tfds"))
    assert [p.directory for p in prepared] == [directory] and "array_record" in prepared[0].formats
    small = tfds_source.units(prepared[0], spec, unit_bytes=100)
    assert len(small["test"]) > 3 and small["test"][0].stop == small["test"][1].start
    whole = tfds_source.units(prepared[0], spec)
    assert len(whole["test"]) == 1
    from mdlm_jax.data.formats import ReadStats, read_unit
    read = lambda units: [r for u in units for r in read_unit(u, ReadStats())]  # noqa: E731
    assert read(small["test"]) == read(whole["test"]) == _tfds_order(directory, "test")
    # Prepared in 3 shards (of many small units), then merged: the same cache as in one process.
    cfg = data_config(tmp_path, "lm1b", tfds_data_dir=str(tmp_path / "tfds"), tokenizer="bytes")
    one = pipeline.prepared_split(cfg, "train")
    monkeypatch.setattr(tfds_source, "units", functools.partial(tfds_source.units, unit_bytes=100))
    sharded = data_config(tmp_path, "lm1b", tfds_data_dir=str(tmp_path / "tfds"), tokenizer="bytes",
                   cache_dir=str(tmp_path / "sharded"))
    for shard in range(3):
        meta = pipeline.prepare_part(sharded, "train", shard=shard, num_shards=3)
        assert meta["num_units"] > 3 and meta["documents"] > 0
    np.testing.assert_array_equal(np.asarray(pipeline.prepared_split(sharded, "train")[0]), np.asarray(one[0]))


def _as_tfrecord(directory):
    """What a copy built with tfds's default format looks like to us: dataset_info.json says
    tfrecord (its shards can only be read by tf.data)."""
    path = os.path.join(directory, "dataset_info.json")
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    info["fileFormat"] = "tfrecord"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(info, f)
    for name in os.listdir(directory):
        if ".array_record-" in name:
            renamed = name.replace(".array_record-", ".tfrecord-")
            os.rename(os.path.join(directory, name), os.path.join(directory, renamed))


def test_tfrecord_copy_is_refused_with_the_rebuild_command(tmp_path):
    _, directory = _lm1b_tfds(tmp_path)
    _as_tfrecord(directory)
    cfg = data_config(tmp_path, "lm1b", tfds_data_dir=str(tmp_path / "tfds"), tokenizer="bytes")
    rebuild = (r"is in the tfrecord format, which only TensorFlow can read; rebuild it in the ArrayRecord format "
               r"with `tfds build lm1b --file_format=array_record --data_dir=[^`]*` \(or convert it with `tfds "
               r"convert_format --dataset_version_dir=.*lm1b/1\.1\.0 --out_file_format=array_record`\)")
    with pytest.raises(DatasetNotFoundError, match="LM1B .*: the TensorFlow Datasets copy .*" + rebuild):
        data.build_blocks(cfg, "test")
    # Found only in the default dir: skipped (the HF caches may still hold it), and named if nothing else is.
    os.rename(tmp_path / "tfds", tmp_path / "tfds_default")
    cfg.tfds_data_dir = ""
    with pytest.raises(DatasetNotFoundError, match=r"LM1B \(One Billion Words\) was not found\. Tried: data\.path "
                                                   r"\(unset\); the TensorFlow Datasets copy .*" + rebuild):
        data.build_blocks(cfg, "test")
    pa = pytest.importorskip("pyarrow")
    build = tmp_path / "hf_home" / "datasets" / "lm1b" / "plain_text" / "1.1.0" / "0123abcd"
    build.mkdir(parents=True)
    for split in ("train", "test"):
        with pa.OSFile(str(build / f"lm1b-{split}.arrow"), "wb") as sink:
            table = pa.table({"text": ["from the hf cache ."]})
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
    assert DATASETS["lm1b"].locate(cfg).origin == "the Hugging Face cache (arrow)"


def test_missing_lm1b_names_the_tfds_route(tmp_path):
    cfg = data_config(tmp_path, "lm1b", tokenizer="bytes")
    with pytest.raises(DatasetNotFoundError, match=r"Tried: data\.path \(unset\); the TensorFlow Datasets data dir "
                                                   r".*tfds_default \(no prepared lm1b\); the Hugging Face datasets "
                                                   r"cache .*`tfds build lm1b --file_format=array_record --data_dir="
                                                   r"DIR`, and set --config\.data\.tfds_data_dir=DIR"):
        data.build_blocks(cfg, "train")
    # An explicit tfds dir without the dataset falls through to the next places too.
    cfg.tfds_data_dir = str(tmp_path / "elsewhere")
    with pytest.raises(DatasetNotFoundError, match=r"data dir .*elsewhere \(no prepared lm1b\)"):
        data.build_blocks(cfg, "train")


def test_older_plain_text_config_layout_and_wrong_features(tmp_path):
    texts = {"test": ["one sentence .", "another one ."]}
    directory = build_tfds(tmp_path / "tfds", "lm1b", {s: [{"text": t} for t in r] for s, r in texts.items()},
                           config_dir="plain_text")
    cfg = data_config(tmp_path, "lm1b", tfds_data_dir=str(tmp_path / "tfds"), tokenizer="bytes")
    located = DATASETS["lm1b"].locate(cfg)
    assert located.root == directory and sorted(located.parts) == ["test"]
    detok = get_detokenizer("lm1b")
    assert sorted(_docs_of(*pipeline.prepared_split(cfg, "test"))) == sorted(detok(t) for t in texts["test"])
    with pytest.raises(DatasetNotFoundError, match=r"'train' part"):
        pipeline.prepared_split(cfg, "train")
    build_tfds(tmp_path / "other", "lm1b", {"test": [{"sentence": "x"}]}, fields=("sentence",))
    cfg = data_config(tmp_path, "lm1b", tfds_data_dir=str(tmp_path / "other"), tokenizer="bytes",
               cache_dir=str(tmp_path / "cache2"))
    with pytest.raises(DatasetNotFoundError, match=r"has no feature 'text' \(features: \['sentence'\]\)"):
        data.build_blocks(cfg, "test")


def test_ag_news_subset_joins_title_and_description(tmp_path):
    rows = [{"title": f"Title {i}", "description": f"Body {i} , with é ."} for i in range(7)]
    directory = build_tfds(tmp_path / "tfds", "ag_news_subset", {"train": rows[:4], "test": rows[4:]},
                           fields=("title", "description"), version="1.0.0")
    cfg = data_config(tmp_path, "ag_news", tfds_data_dir=str(tmp_path / "tfds"), tokenizer="bytes", detokenizer="none")
    assert DATASETS["ag_news"].locate(cfg).root == directory
    got = _docs_of(*pipeline.prepared_split(cfg, "test"))
    assert sorted(got) == sorted(f"{r['title']} {r['description']}" for r in rows[4:])
