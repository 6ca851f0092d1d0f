"""The paper in miniature (tools/compare.py): every variant trains on the same data and seed with
only its objective changed, is evaluated with the same estimator, and lands in the tables."""

import json

import numpy as np
import pytest
from tests_util import load_config

from mdlm_jax import config as config_lib
from mdlm_jax.tools import compare


def test_a_variant_changes_only_its_objective_fields():
    base = load_config("quickstart", "quick")
    flat = config_lib.flatten(base)
    for name, change in compare.VARIANTS.items():
        cfg = compare.variant_config(base, name)
        changed = {k for k, v in config_lib.flatten(cfg).items() if flat.get(k) != v}
        named = {f"{section}.{field}" for section, fields in change.items() for field in fields}
        assert changed - {"evals"} <= named, (name, changed)
        assert cfg.evals.bound.type == "compare_bound" and cfg.seed == base.seed
        assert (cfg.data, cfg.train) == (base.data, base.train)
    with pytest.raises(ValueError, match=r"Unknown variant 'mdlm2'; choose from \[.*'no_carry_over'"):
        compare.variant_config(base, "mdlm2")


def test_standard_errors_apart_and_the_ordering_lines():
    results = {"ar": dict(nelbo=3.0, nelbo_se=0.03, ppl=np.exp(3.0), bound=False),
               "mdlm": dict(nelbo=3.1, nelbo_se=0.04, ppl=np.exp(3.1), bound=True),
               "sedd": dict(nelbo=3.05, nelbo_se=0.04, ppl=np.exp(3.05), bound=True)}
    assert compare.se_apart(results["ar"], results["mdlm"]) == pytest.approx(0.1 / 0.05)
    table = compare.format_table(results)
    assert "ar < mdlm: holds (+2.0 SE)" in table and "mdlm < sedd: does not hold (-0.9 SE)" in table
    assert table.index("Table 1") < table.index("SEDD") < table.index("Table 8")
    assert table.count("MDLM") == 2  # Table 1's row and Table 8's first row


def test_compare_trains_each_variant_on_own_text_and_writes_the_table_and_curves(tmp_path, capsys):
    """On the user's own text files (the embedded corpus is the quickstart's default: the docs' run)."""
    work, text = tmp_path / "cmp", tmp_path / "mine.txt"
    rng = np.random.default_rng(0)
    text.write_text("\n\n".join(" ".join(rng.choice(["river", "stone", "light", "quiet"], 60)) for _ in range(40)))
    argv = ["--config", f"{compare.__file__.rsplit('/mdlm_jax/', 1)[0]}/configs/quickstart.py:quick",
            "--workdir", str(work), "--variants", "ar,mdlm", "--num_t", "2", "--config.data.source=files",
            f"--config.data.files={text}", "--config.data.val_fraction=0.2",
            f"--config.data.cache_dir={tmp_path / 'cache'}", "--config.train.steps=4", "--config.train.eval_every=2"]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    assert "Autoregressive (Transformer)" in out and "ar < mdlm:" in out
    results = json.loads((work / "compare.json").read_text())
    assert [s for s, _ in results["mdlm"]["curve"]] == [2, 4] and results["mdlm"]["num_t"] == 2
    assert results["ar"]["num_t"] == 1 and not results["ar"]["bound"] and results["mdlm"]["bound"]
    assert results["ar"]["tokens"] < results["mdlm"]["tokens"]  # AR scores L - 1 of each block's L tokens
    cfg = load_config("quickstart", "quick")
    assert results["ar"]["train_tokens"] == results["mdlm"]["train_tokens"] == 4 * cfg.train.batch_size * cfg.data.seq_len
    assert f"Training tokens per variant: {results['ar']['train_tokens']:,} (steps x batch x L" in out
    assert (work / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert compare.main(argv) == 0  # trained variants are found, not retrained
    again = json.loads((work / "compare.json").read_text())["mdlm"]
    assert again["train_seconds"] is None and again["curve"] == results["mdlm"]["curve"]
