"""The GLUE readers on fixtures written in both real layouts: the GLUE distribution's TSV files
(CoLA without a header, MRPC's BOM, MNLI's parse and label1..label5 columns, bare quote
characters) and the Hugging Face nyu-mll/glue parquet files; the two must give the same
examples, with the hub's label ids. Then the errors for missing files and bad labels, and the
skipping of malformed lines."""

import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mdlm_jax import glue
from mdlm_jax.glue import read_split

# The hub's class names in id order (nyu-mll/glue README, dataset_info), written out here so the
# registry is checked against them rather than against itself.
HF_LABELS = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
}
HF_COLUMNS = {
    "cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
}
TSV_FILES = {"train": "train.tsv", "validation": "dev.tsv", "validation_matched": "dev_matched.tsv",
             "validation_mismatched": "dev_mismatched.tsv"}
SPLITS = [(task, split) for task in HF_COLUMNS for split in glue.TASKS[task].splits]


def _examples(task, split):
    """(text_a, text_b, label) rows: a label name (classification) or a score (STS-B). Quote
    characters open and sit inside texts; one SST-2 text keeps the real files' trailing space."""
    pair = len(HF_COLUMNS[task]) == 2
    rows = []
    for i in range(5):
        a = [f'"{task} {split} {i}: the cat sat', f"it's a {i} \"quoted\" test", f"plain {i} sentence ",
             'he said "no', f"a ' single {i}"][i]
        b = f'{i} "hypothesis" for {split}' if pair else None
        label = round(0.4 + 1.1 * i, 2) if task == "stsb" else HF_LABELS[task][(i * 7 + len(split)) % len(
            HF_LABELS[task])]
        rows.append((a, b, label))
    return rows


def _id(task, label):
    return label if task == "stsb" else HF_LABELS[task].index(label)


def _tsv_lines(task, split, rows):
    header = {
        "cola": None,
        "sst2": "sentence\tlabel",
        "mrpc": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        "mnli": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
                "sentence2_parse\tsentence1\tsentence2\t" + (
                    "label1" if split == "train" else "label1\tlabel2\tlabel3\tlabel4\tlabel5") + "\tgold_label",
        "qnli": "index\tquestion\tsentence\tlabel",
        "rte": "index\tsentence1\tsentence2\tlabel",
    }[task]
    lines = [] if header is None else [header]
    for i, (a, b, label) in enumerate(rows):
        lid = _id(task, label)
        lines.append({
            "cola": lambda: f"gj04\t{lid}\t{'' if lid else '*'}\t{a}",
            "sst2": lambda: f"{a}\t{lid}",
            "mrpc": lambda: f"{lid}\t{1000 + i}\t{2000 + i}\t{a}\t{b}",
            "qqp": lambda: f"{i}\t{10 + i}\t{20 + i}\t{a}\t{b}\t{lid}",
            "stsb": lambda: f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}\t{label:.3f}",
            "mnli": lambda: "\t".join(
                [str(i), f"{300 + i}", f"{300 + i}e", "fiction", "( ( The cat ) sat )", "( A ( cat ) )",
                 "(ROOT (S (NP (DT The) (NN cat)) (VP (VBD sat))))", "(ROOT (NP (DT A) (NN cat)))", a, b]
                # label1 (and label2..5 on dev) need not agree with gold_label, the last column
                + ["neutral" if label != "neutral" else "contradiction"] * (1 if split == "train" else 5)
                + [label]),
            "qnli": lambda: f"{i}\t{a}\t{b}\t{label}",
            "rte": lambda: f"{i}\t{a}\t{b}\t{label}",
        }[task]())
    return lines


def _write_tsv(root, task, split, lines):
    folder = root / glue.TASKS[task].tsv_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TSV_FILES[split]).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_parquet(root, task, split, rows, shards=1):
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    columns = HF_COLUMNS[task]
    label_type = pa.float32() if task == "stsb" else pa.int64()
    for shard, part in enumerate(np.array_split(np.arange(len(rows)), shards)):
        data = {columns[0]: [rows[i][0] for i in part]}
        if len(columns) == 2:
            data[columns[1]] = [rows[i][1] for i in part]
        data["label"] = pa.array([_id(task, rows[i][2]) for i in part], label_type)
        data["idx"] = pa.array(part.tolist(), pa.int32())
        pq.write_table(pa.table(data), folder / f"{split}-{shard:05d}-of-{shards:05d}.parquet")


@pytest.fixture
def roots(tmp_path):
    """A TSV root and a parquet root holding every task's splits."""
    tsv, parquet = tmp_path / "glue_data", tmp_path / "hf_glue"
    for task, split in SPLITS:
        rows = _examples(task, split)
        _write_tsv(tsv, task, split, _tsv_lines(task, split, rows))
        _write_parquet(parquet, task, split, rows)
    return tsv, parquet


@pytest.mark.parametrize("task,split", SPLITS)
def test_both_layouts_give_the_examples(roots, task, split):
    rows = _examples(task, split)
    for root in roots:
        ex = read_split(str(root), task, split)
        assert ex.text_a == [a for a, _, _ in rows]
        assert ex.text_b == (None if task in ("cola", "sst2") else [b for _, b, _ in rows])
        want = [_id(task, label) for _, _, label in rows]
        assert ex.labels.dtype == (np.float32 if task == "stsb" else np.int32)
        np.testing.assert_array_equal(ex.labels, np.asarray(want, ex.labels.dtype))
        assert len(ex) == len(rows) and ex.skipped == 0 and len(ex.files) == 1


def test_registry_matches_the_hub():
    assert sorted(glue.TASKS) == sorted(HF_COLUMNS)  # WNLI left out
    for task, spec in glue.TASKS.items():
        assert spec.labels == HF_LABELS.get(task, ())
        assert spec.text_columns == HF_COLUMNS[task]
        assert spec.num_labels == (1 if task == "stsb" else len(HF_LABELS[task]))
    assert glue.TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert {spec.eval_splits for name, spec in glue.TASKS.items() if name != "mnli"} == {("validation",)}
    with pytest.raises(ValueError, match="WNLI"):
        glue.get_task("wnli")


def test_mnli_matched_and_mismatched_are_their_own_files(roots):
    for root in roots:
        matched = read_split(str(root), "mnli", "validation_matched")
        mismatched = read_split(str(root), "mnli", "validation_mismatched")
        assert all(b.endswith("for validation_matched") for b in matched.text_b)
        assert all(b.endswith("for validation_mismatched") for b in mismatched.text_b)
        assert matched.files[0].endswith(("dev_matched.tsv", "validation_matched-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match="validation_matched"):
        read_split(str(roots[0]), "mnli", "validation")


def test_quotes_are_text_not_quoting(roots):
    tsv, _ = roots
    ex = read_split(str(tsv), "rte", "train")
    assert ex.text_a[0].startswith('"rte train 0') and ex.text_a[3] == 'he said "no'
    assert ex.text_b[1] == '1 "hypothesis" for train'


def test_missing_task_names_the_task_and_both_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read_split(str(tmp_path), "rte", "validation")
    message = str(info.value)
    assert "rte" in message and "validation" in message
    assert os.path.join(str(tmp_path), "RTE", "dev.tsv") in message
    assert os.path.join(str(tmp_path), "rte", "validation-00000-of-00001.parquet") in message


def test_missing_split_file_names_it(tmp_path):
    rows = _examples("mnli", "train")
    _write_tsv(tmp_path, "mnli", "train", _tsv_lines("mnli", "train", rows))
    assert len(read_split(str(tmp_path), "mnli", "train")) == len(rows)
    with pytest.raises(FileNotFoundError, match="dev_mismatched.tsv") as info:
        read_split(str(tmp_path), "mnli", "validation_mismatched")
    assert "validation_mismatched-00000-of-00001.parquet" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no parquet split file"):
        read_split(str(tmp_path), "mnli", "train", layout="parquet")


def test_both_layouts_in_one_root_need_a_choice(tmp_path):
    rows = _examples("sst2", "validation")
    _write_tsv(tmp_path, "sst2", "validation", _tsv_lines("sst2", "validation", rows))
    _write_parquet(tmp_path, "sst2", "validation", rows)
    with pytest.raises(ValueError, match="layout="):
        read_split(str(tmp_path), "sst2", "validation")
    tsv = read_split(str(tmp_path), "sst2", "validation", layout="tsv")
    parquet = read_split(str(tmp_path), "sst2", "validation", layout="parquet")
    assert tsv.files[0].endswith("dev.tsv") and parquet.files[0].endswith(".parquet")
    assert tsv.text_a == parquet.text_a


def test_parquet_shards_concatenate_in_order(tmp_path):
    rows = _examples("qnli", "train")
    _write_parquet(tmp_path, "qnli", "train", rows, shards=3)
    ex = read_split(str(tmp_path), "qnli", "train")
    assert ex.text_a == [a for a, _, _ in rows] and len(ex.files) == 3
    os.remove(tmp_path / "qnli" / "train-00001-of-00003.parquet")
    with pytest.raises(FileNotFoundError, match="train-00001-of-00003.parquet"):
        read_split(str(tmp_path), "qnli", "train")


def _bad_tsv(tmp_path, task, split, line_index, column, value):
    lines = _tsv_lines(task, split, _examples(task, split))
    fields = lines[line_index].split("\t")
    fields[column] = value
    lines[line_index] = "\t".join(fields)
    _write_tsv(tmp_path, task, split, lines)
    return os.path.join(str(tmp_path), glue.TASKS[task].tsv_dir, TSV_FILES[split])


@pytest.mark.parametrize("task,column,value", [("mnli", -1, "maybe"), ("rte", -1, "0"), ("cola", 1, "2"),
                                               ("qqp", -1, "yes"), ("stsb", -1, "5.5"), ("stsb", -1, "high"),
                                               ("stsb", -1, "nan")])
def test_tsv_label_outside_the_set(tmp_path, task, column, value):
    path = _bad_tsv(tmp_path, task, "validation_matched" if task == "mnli" else "validation", 3, column, value)
    with pytest.raises(ValueError) as info:
        read_split(str(tmp_path), task, "validation_matched" if task == "mnli" else "validation")
    message = str(info.value)
    # lines[3] is the file's line 4 with or without a header (CoLA has none): the header is line 1.
    assert task in message and path in message and "line 4" in message and repr(value) in message


@pytest.mark.parametrize("task,value", [("rte", 3), ("mnli", -1), ("stsb", 5.25)])
def test_parquet_label_outside_the_set(tmp_path, task, value):
    split = "validation_matched" if task == "mnli" else "validation"
    rows = _examples(task, split)
    _write_parquet(tmp_path, task, split, rows)
    path = tmp_path / task / f"{split}-00000-of-00001.parquet"
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[2] = value
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             pa.array(labels, table.schema.field("label").type))
    pq.write_table(table, path)
    with pytest.raises(ValueError) as info:
        read_split(str(tmp_path), task, split)
    message = str(info.value)
    assert task in message and str(path) in message and "row 2" in message and repr(value) in message


def test_malformed_lines_are_skipped_and_counted(tmp_path, caplog):
    for task in ("qqp", "mnli"):
        lines = _tsv_lines(task, "train", _examples(task, "train"))
        # A question holding a newline, as in QQP's real train.tsv: two lines, neither with 6 fields.
        broken = lines[2].split("\t")
        lines[2:3] = ["\t".join(broken[:4]) + " first half", "second half\t" + "\t".join(broken[4:])]
        lines.insert(5, "")  # an empty line is malformed too
        lines.insert(6, lines[1] + "\tstray")  # and so is one with a field too many
        _write_tsv(tmp_path, task, "train", lines)
        with caplog.at_level(logging.WARNING):
            ex = read_split(str(tmp_path), task, "train")
        assert ex.skipped == 4 and len(ex) == 4
        assert "skipped 4 malformed" in caplog.text and "lines 3, 4, 6, 7" in caplog.text
        rows = [r for i, r in enumerate(_examples(task, "train")) if i != 1]
        assert ex.text_a == [a for a, _, _ in rows]
        caplog.clear()


def test_missing_column_names_the_header(tmp_path):
    lines = _tsv_lines("qnli", "validation", _examples("qnli", "validation"))
    lines[0] = lines[0].replace("question", "query")
    _write_tsv(tmp_path, "qnli", "validation", lines)
    with pytest.raises(ValueError, match=r"no column\(s\) \['question'\]"):
        read_split(str(tmp_path), "qnli", "validation")
