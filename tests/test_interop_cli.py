"""``python -m mdlm_jax.interop export|import``: a short training run through every format and back
bit-exactly with the same eval PPL, the official golden case through import, and clear errors."""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from tests_util import REPO, load_config

torch = pytest.importorskip("torch")

from mdlm_jax import checkpoint, evaluate, train  # noqa: E402
from mdlm_jax.data import tokenizers  # noqa: E402
from mdlm_jax.interop import cli, formats  # noqa: E402

CONFIG = f"{REPO / 'configs' / 'quickstart.py'}:quick"
OUT = {"lightning": "model.ckpt", "state_dict": "model.pt", "safetensors": "model.safetensors", "hf": "hf"}
GOLDEN = "dit_h64_b2_n2_v50_l16_tc0"


def overrides(root):
    return [f"--config.data.cache_dir={root / 'cache'}", "--config.train.eval_every=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step quickstart run: (root, workdir, config, {params, ema_params} as numpy, step)."""
    root = tmp_path_factory.mktemp("interop_cli")
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(root / "cache")
    cfg.train.eval_every = 0
    work = root / "work"
    train.train_and_evaluate(cfg, str(work))
    arrays, _, step = checkpoint.restore_numpy(str(work), ("params", "ema_params"))
    assert step == cfg.train.steps
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(arrays["params"]),
                                                         jax.tree.leaves(arrays["ema_params"])))
    return root, work, cfg, arrays, step


@pytest.fixture(scope="module")
def evaluated(trained):
    """One setup (compiled once) and the eval metrics of the trained workdir."""
    _, work, cfg, _, _ = trained
    s = train.setup(cfg)
    return s, evaluate.evaluate(s, restore(s, work))


def restore(s, workdir):
    ckpt = checkpoint.Checkpointer(str(workdir))
    try:
        return ckpt.restore(s.abstract_state)[0]
    finally:
        ckpt.close()


def run(*argv):
    return cli.main([str(a) for a in argv])


def export(trained, fmt, *extra, name=None):
    root, work, *_ = trained
    out = root / (name or fmt) / OUT[fmt]
    assert run("export", "--workdir", work, "--format", fmt, "--out", out, *extra) == 0
    return out


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype == np.float32 and np.array_equal(x, y)


@pytest.mark.parametrize("use_ema", [True, False], ids=["ema", "raw"])
@pytest.mark.parametrize("fmt", cli.FORMATS)
def test_export_import_round_trip_is_bit_exact_with_same_eval(trained, evaluated, fmt, use_ema, capsys):
    root, _, cfg, arrays, step = trained
    out = export(trained, fmt, *([] if use_ema else ["--no-ema"]), name=f"{fmt}_{use_ema}")
    assert f"Exported step {step}" in capsys.readouterr().out
    imported = root / f"imported_{fmt}_{use_ema}"
    assert run("import", "--from", out, "--config", CONFIG, *overrides(root), "--workdir", imported) == 0
    got, saved, got_step = checkpoint.restore_numpy(str(imported), ("params", "ema_params"))
    assert got_step == 0 and saved["model"] == cfg.model.to_dict()
    want = arrays["ema_params" if use_ema else "params"]
    assert_trees_equal(got["params"], want)
    assert_trees_equal(got["ema_params"], want)
    if use_ema:  # evaluation uses the EMA weights: the imported workdir gives the identical bound
        s, metrics = evaluated
        assert evaluate.evaluate(s, restore(s, imported)) == metrics


def test_lightning_file_holds_raw_params_and_ema(trained):
    root, _, cfg, arrays, step = trained
    out = export(trained, "lightning", name="lightning_both")
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["global_step"] == step and len(ckpt["ema"]["shadow_params"]) == 30
    imported = root / "imported_lightning_raw"
    assert run("import", "--from", out, "--no-ema", "--config", CONFIG, *overrides(root), "--workdir", imported) == 0
    got, _, _ = checkpoint.restore_numpy(str(imported), ("ema_params",))
    assert_trees_equal(got["ema_params"], arrays["params"])


def test_training_resumes_from_the_imported_workdir(trained, evaluated):
    root, _, _, arrays, _ = trained
    imported = root / "imported_to_train"
    assert run("import", "--from", export(trained, "safetensors", name="to_train"), "--config", CONFIG,
               *overrides(root), "--workdir", imported) == 0
    s, _ = evaluated
    ckpt = checkpoint.Checkpointer(str(imported))
    try:
        state, data_state = train.restore_or_init(s, ckpt)  # what --mode=train does first
    finally:
        ckpt.close()
    assert int(state.step) == 0 and data_state is None  # a fresh data iterator
    assert_trees_equal(jax.device_get(state.params), arrays["ema_params"])  # restored, not a fresh init


def test_fine_tuning_from_an_imported_checkpoint_trains(trained):
    """``train.init_checkpoint``: imported EMA weights, a fresh optimizer, a few donated steps."""
    root, _, cfg, arrays, _ = trained
    imported = root / "imported_to_finetune"
    assert run("import", "--from", export(trained, "hf", name="to_finetune"), "--config", CONFIG,
               *overrides(root), "--workdir", imported) == 0
    tuned = cfg.copy_and_resolve_references()
    tuned.train.init_checkpoint = str(imported)
    work = root / "finetuned"
    s = train.setup(tuned)
    ckpt = checkpoint.Checkpointer(str(work))
    try:
        state, _ = train.restore_or_init(s, ckpt)  # the empty workdir falls to init_checkpoint
    finally:
        ckpt.close()
    assert_trees_equal(jax.device_get(state.params), arrays["ema_params"])
    assert_trees_equal(jax.device_get(state.ema_params), arrays["ema_params"])
    train.train_and_evaluate(tuned, str(work))
    got, _, step = checkpoint.restore_numpy(str(work), ("params",))
    assert step == cfg.train.steps
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got["params"]),
                                                       jax.tree.leaves(arrays["ema_params"]))]
    assert any(moved)


class _GoldenTokenizer:
    """The golden case's vocabulary: 49 tokens, the mask appended (V = 50, mask id 49)."""

    name, vocab_size, mask_id = "golden49", 49, None


def test_golden_case_through_import_reproduces_official_logits(tmp_path, fixtures_dir, monkeypatch):
    z = np.load(fixtures_dir / f"{GOLDEN}.npz")
    case = json.loads(str(z["case_json"]))
    assert (case["hidden"], case["cond"], case["blocks"], case["heads"]) == (64, 32, 2, 2)  # the quick config's
    sd = {k[len("state_dict/"):]: z[k] for k in z.files if k.startswith("state_dict/")}
    monkeypatch.setitem(tokenizers.TOKENIZERS, "golden49", _GoldenTokenizer)
    cfg = load_config("quickstart", "quick")
    cfg.data.tokenizer = "golden49"
    s = train.setup(cfg)
    assert (s.task.model.vocab_size, s.task.mask_id) == (case["vocab"], int(z["mask_index"]))
    path = tmp_path / "official.ckpt"
    formats.save_lightning(path, sd, s.task.model, ema_sd=sd)  # the official Lightning layout
    assert run("import", "--from", path, "--config", CONFIG, "--config.data.tokenizer=golden49",
               "--workdir", tmp_path / "work") == 0
    params = checkpoint.restore_numpy(str(tmp_path / "work"))[0]["ema_params"]
    logits = s.task.model.apply({"params": params}, z["xt"], z["sigma"])
    np.testing.assert_allclose(logits, z["logits"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------- errors


def error(capsys, *argv):
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_import_errors_name_the_problem(trained, capsys, tmp_path):
    root = trained[0]
    pt, hf = export(trained, "state_dict", name="errors"), export(trained, "hf", name="errors")
    base = ["import", "--config", CONFIG, *overrides(root)]
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.model.cond_dim=16")
    assert "Parameter blocks_0/adaLN_modulation/kernel: checkpoint shape (32, 384) does not match the config's " \
           "(16, 384)" in err
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.data.tokenizer=text8")
    assert "vocabulary has 260 entries" in err and "'text8' gives 35 (mask id 4)" in err
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.model.n_blocks=3")
    assert "missing keys ['blocks.2.adaLN_modulation.bias'" in err
    sd, _ = formats.load_any(pt)
    formats.save_state_dict(tmp_path / "extra.pt", dict(sd, **{"blocks.0.extra.weight": np.zeros(2, np.float32)}))
    err = error(capsys, *base, "--from", tmp_path / "extra.pt", "--workdir", tmp_path / "a")
    assert "unexpected keys ['blocks.0.extra.weight']" in err
    edited = tmp_path / "hf"
    shutil.copytree(hf, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps(dict(config, mask_token_id=7)))
    err = error(capsys, *base, "--from", edited, "--workdir", tmp_path / "a")
    assert "mask_token_id 7" in err and "259" in err
    err = error(capsys, *base, "--from", tmp_path / "missing.pt", "--workdir", tmp_path / "a")
    assert "No checkpoint at" in err
    err = error(capsys, *base, "--from", pt, "--workdir", trained[1])
    assert "already holds checkpoints" in err
    assert not (tmp_path / "a").exists()


def test_export_errors_name_the_problem(trained, capsys, tmp_path):
    root, work, *_ = trained
    err = error(capsys, "export", "--workdir", work, "--format", "onnx", "--out", tmp_path / "x")
    assert "Unknown format 'onnx'" in err
    err = error(capsys, "export", "--workdir", tmp_path / "nowhere", "--format", "hf", "--out", tmp_path / "x")
    assert "No checkpoint in" in err
    err = error(capsys, "export", "--workdir", work, "--step", "7", "--format", "hf", "--out", tmp_path / "x")
    assert "No checkpoint step 7" in err and "(steps: [2])" in err
    err = error(capsys, "export", "--workdir", work, "--format", "lightning", "--out", tmp_path / "x.zip")
    assert ".ckpt" in err
    err = error(capsys, "export", "--workdir", work, "--format", "hf", "--out", tmp_path / "x", "--config", CONFIG,
                "--config.model.hidden_size=32")
    assert "checkpoint shape" in err and "does not match the config's" in err
    err = error(capsys, "export", "--workdir", work, "--format", "hf", "--out", tmp_path / "x",
                "--config.model.hidden_size=32")
    assert "need --config" in err
    assert not (tmp_path / "x").exists()


def test_module_entry_point(trained, tmp_path):
    """``python -m mdlm_jax.interop``: a real export, and an error as one line without a traceback."""
    _, work, *_ = trained
    cmd = [sys.executable, "-m", "mdlm_jax.interop", "export", "--workdir", str(work), "--format", "safetensors"]
    done = subprocess.run(cmd + ["--out", str(tmp_path / "m.safetensors")], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    sd, meta = formats.load_any(tmp_path / "m.safetensors")
    assert meta["format"] == "safetensors" and "vocab_embed.embedding" in sd
    done = subprocess.run(cmd + ["--out", str(tmp_path / "x"), "--step", "9"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: No checkpoint step 9")
    assert "Traceback" not in done.stderr
