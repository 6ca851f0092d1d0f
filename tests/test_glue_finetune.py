"""GLUE fine-tuning (mdlm_jax.glue.finetune and the CLI): inputs encoded as transformers encodes
them, a head that learns a separable task (so the harness cannot pass by predicting one class),
STS-B as regression, the JSON and the Table 4 row, and bad input named before training."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from tests_util import BERT_DIR, needs_bert

from mdlm_jax import data
from mdlm_jax.glue import __main__ as glue_main
from mdlm_jax.glue import finetune, tasks
from mdlm_jax.interop import hf_bert
from mdlm_jax.models import bert

pytestmark = needs_bert

WORDS = "the quick brown fox jumps over a lazy dog unbelievably, said Dr. O'Neil".split()


@pytest.fixture(scope="module")
def tokenizer():
    return data.get_tokenizer("bert-base-uncased", path=BERT_DIR)


def test_pairs_are_encoded_and_truncated_as_transformers_does(tokenizer):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(BERT_DIR)
    rng = np.random.default_rng(0)
    a = [" ".join(rng.choice(WORDS, rng.integers(1, 20))) for _ in range(200)]
    b = [" ".join(rng.choice(WORDS, rng.integers(1, 20))) for _ in range(200)]
    for length in (8, 13, 64):
        for second in (b, None):
            ours = finetune.encode(tokenizer, tasks.Examples(a, second, np.zeros(200, np.int32)), length)
            ref = hf(a, second, truncation="longest_first", max_length=length, padding="max_length")
            np.testing.assert_array_equal(ours.tokens, ref["input_ids"])
            np.testing.assert_array_equal(ours.token_types, ref["token_type_ids"])
            np.testing.assert_array_equal(ours.attention_mask, ref["attention_mask"])


def tiny_bert(tmp_path, vocab_size=30522):
    """A random 2-layer BERT on the real bert-base-uncased vocabulary, saved as an HF directory."""
    config = bert.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64)
    params = nn.meta.unbox(bert.Bert(config).init(jax.random.key(0), np.zeros((1, 8), np.int32))["params"])
    hf_bert.save_hf_bert(tmp_path / "bert", config, jax.tree.map(np.asarray, params))
    return str(tmp_path / "bert")


def write_sst2(root, n_train=192, n_dev=64, seed=0):
    """An SST-2-shaped task in the GLUE TSV layout whose label is which of two words a sentence holds."""
    rng = np.random.default_rng(seed)
    (root / "SST-2").mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for _ in range(n):
            label = int(rng.integers(2))
            words = list(rng.choice(WORDS, 6)) + ["wonderful" if label else "terrible"]
            rng.shuffle(words)
            rows.append(f"{' '.join(words)} \t{label}")
        (root / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")


def write_stsb(root, n=48, seed=1):
    rng = np.random.default_rng(seed)
    (root / "STS-B").mkdir(parents=True)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for split in ("train", "dev"):
        rows = [f"{i}\tmain-news\tx\t2012\t{i}\tnone\tnone\t{' '.join(rng.choice(WORDS, 5))}\t"
                f"{' '.join(rng.choice(WORDS, 5))}\t{rng.uniform(0, 5):.3f}" for i in range(n)]
        (root / "STS-B" / f"{split}.tsv").write_text(header + "\n" + "\n".join(rows) + "\n")


def test_the_head_learns_a_separable_task_and_the_cli_writes_the_row(tmp_path, capsys):
    init = tiny_bert(tmp_path)
    write_sst2(tmp_path / "glue")
    write_stsb(tmp_path / "glue")
    out = tmp_path / "out"
    argv = ["--init", init, "--data", str(tmp_path / "glue"), "--tasks", "sst2,stsb", "--out", str(out),
            "--tokenizer", BERT_DIR, "--learning_rate", "1e-3", "--epochs", "8", "--max_length", "16",
            "--batch_size", "16", "--eval_batch_size", "16", "--name", "tiny"]
    assert glue_main.main(argv) == 0
    result = json.loads((out / "glue.json").read_text())
    sst2 = result["tasks"]["sst2"]
    assert sst2["validation"]["accuracy"] > 0.9, sst2  # chance is 0.5; one class would score about 0.5
    assert sst2["train_examples"] == 192 and sst2["train_loss"] < 0.5
    stsb = result["tasks"]["stsb"]["validation"]
    assert set(stsb) == {"pearson", "spearmanr"} and all(np.isfinite(v) for v in stsb.values())
    row = result["table4"]
    assert row["SST-2"] == pytest.approx(100 * sst2["validation"]["accuracy"]) and row["avg"] is None
    printed = capsys.readouterr().out
    assert "tiny" in printed and "SST-2" in printed and "MNLI-m" in printed


def test_pooler_comes_from_a_bare_bert_model_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1,
                                                        num_attention_heads=4, intermediate_size=64))
    hf.save_pretrained(tmp_path / "bare")
    pooler = hf_bert.read_pooler(tmp_path / "bare")
    np.testing.assert_array_equal(pooler["kernel"], hf.pooler.dense.weight.detach().numpy().T)
    np.testing.assert_array_equal(pooler["bias"], hf.pooler.dense.bias.detach().numpy())
    assert hf_bert.read_pooler(tiny_bert(tmp_path, vocab_size=99)) is None  # a BertForMaskedLM has none


def test_bad_input_is_named_before_training(tmp_path, capsys):
    init = tiny_bert(tmp_path)
    write_sst2(tmp_path / "glue")
    base = ["--init", init, "--data", str(tmp_path / "glue"), "--out", str(tmp_path / "out"), "--tokenizer", BERT_DIR]
    assert glue_main.main(base + ["--tasks", "sst2,rte"]) == 1
    err = capsys.readouterr().err
    assert "rte" in err and "RTE/train.tsv" in err
    assert glue_main.main(base + ["--tasks", "wnli"]) == 1
    assert "wnli" in capsys.readouterr().err.lower()
    assert glue_main.main(["--init", str(tmp_path / "nothing")] + base[2:] + ["--tasks", "sst2"]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nfine words\t7\n")
    assert glue_main.main(base + ["--tasks", "sst2"]) == 1
    err = capsys.readouterr().err
    assert "sst2" in err and "dev.tsv" in err and "7" in err
