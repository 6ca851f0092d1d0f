"""``python -m mdlm_jax.main`` as a user runs it: every mode starts from the workdir's saved config,
bad settings fail before anything compiles with one clear line, and nothing that was saved is lost."""

import json
import re
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from tests_util import REPO, load_config

from mdlm_jax import checkpoint, experiment
from mdlm_jax.evals import evaluate
from mdlm_jax.training import train

QUICK = "--config=configs/quickstart.py:quick"


def run_main(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "mdlm_jax.main", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def own_text(tmp_path) -> pathlib.Path:
    """A user's corpus: 60 paragraphs, unlike the embedded pydoc text."""
    rng = np.random.default_rng(0)
    words = ["river", "stone", "light", "garden", "window", "quiet", "morning", "letter"]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words, 40))}) + "\n" for _ in range(60)))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """4 steps on the user's own text with data overrides, checkpoints at 2 and 4; the loop's last eval."""
    tmp = tmp_path_factory.mktemp("main_modes")
    cfg = load_config("quickstart", "quick")
    cfg.data.update(source="files", files=(str(own_text(tmp)),), cache_dir=str(tmp / "cache"), val_fraction=0.2)
    cfg.train.update(steps=4, checkpoint_every=2, eval_every=4, keep_checkpoints=5)
    cfg.eval.max_batches = -1
    work = tmp / "work"
    return work, train.train_and_evaluate(cfg, str(work)), cfg


def test_eval_with_only_the_workdir_scores_the_training_data(trained):
    work, final_eval, _ = trained
    run_main(f"--workdir={work}", "--mode=eval")
    out = json.loads((work / "eval_step_4.json").read_text())
    assert out["tokens"] == final_eval["tokens"]
    np.testing.assert_allclose(out["nelbo"], final_eval["nelbo"], rtol=1e-6)


def test_eval_step_picks_an_older_checkpoint(trained):
    work, _, _ = trained
    run_main(f"--workdir={work}", "--mode=eval", "--step=2", "--config.eval.max_batches=1")
    assert json.loads((work / "eval_step_2.json").read_text())["step"] == 2
    proc = run_main(f"--workdir={work}", "--mode=eval", "--step=3", check=False)
    assert proc.returncode != 0 and "No checkpoint step 3" in proc.stderr and "[2, 4]" in proc.stderr


def test_eval_and_sample_restore_only_the_tree_they_read(trained):
    import jax

    from mdlm_jax import main

    work, _, cfg = trained
    s = experiment.build(cfg, "eval")
    weights = main._weights(s, str(work), 2, use_ema=True)
    saved, _, _ = checkpoint.restore_numpy(str(work), ("ema_params",), step=2)
    assert weights.params is None
    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(weights.ema_params), saved["ema_params"])
    assert main._weights(s, str(work), 2, use_ema=False).ema_params is None


def test_sample_with_only_the_workdir(trained):
    work, _, cfg = trained
    run_main(f"--workdir={work}", "--mode=sample")
    run_main(f"--workdir={work}", "--mode=sample")  # the same settings again: a second file, not an overwrite
    files = sorted((work / "samples").glob("step_4_*.jsonl"))
    assert [f.name for f in files] == ["step_4_ddpm_cache_T=4_seed0-2.jsonl", "step_4_ddpm_cache_T=4_seed0.jsonl"]
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(records) == cfg.sample.num_samples
    assert all(len(r["token_ids"]) == cfg.data.seq_len and r["tokenizer"] == "bytes" for r in records)


def test_resuming_with_the_data_overrides_dropped_is_refused_before_compiling(trained):
    work, _, _ = trained
    proc = run_main(QUICK, f"--workdir={work}", "--config.train.steps=6", check=False)
    assert proc.returncode != 0
    assert "data.source: checkpoint 'files', the --config file 'embedded'" in proc.stderr
    assert "another --workdir" in proc.stderr and "Traceback" not in proc.stderr
    assert checkpoint.Checkpointer(str(work)).latest_step() == 4


def test_a_checkpoint_of_another_model_names_the_fields(tmp_path):
    work = tmp_path / "work"
    run_main(QUICK, f"--workdir={work}", "--config.model.n_blocks=1", "--config.train.eval_every=0",
             f"--config.data.cache_dir={tmp_path / 'cache'}")
    proc = run_main(QUICK, f"--workdir={work}", f"--config.data.cache_dir={tmp_path / 'cache'}", check=False)
    assert proc.returncode != 0 and "model.n_blocks: checkpoint 1, the --config file 2" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--config.trian.steps=3"], 'no field \'trian\'. Did you mean "train" instead of "trian"?'),
    (["--config.eval.batch_size=4"], "eval.batch_size (4) / microbatches (1) must be divisible by the data x fsdp"),
])
def test_bad_settings_fail_in_one_line_before_anything_runs(tmp_path, args, message):
    work = tmp_path / "work"
    proc = run_main(QUICK, f"--workdir={work}", *args, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (work / "checkpoints").exists()


@pytest.mark.parametrize("field,value,message", [
    ("model.dtype", "float13", "model.dtype 'float13' is not a compute dtype"),
    ("train.steps", 0, "train.steps must be >= 1"),
    ("optim.lr", -0.001, "optim.lr must be >= 0"),
    ("sample.temperature", 0.0, "sample.temperature must be > 0"),
])
def test_main_checks_the_config_before_building_anything(tmp_path, field, value, message):
    """What main runs first (the subprocess cases above show how it prints a failure)."""
    from mdlm_jax import config as config_lib, main

    cfg = load_config("quickstart", "quick")
    cfg.train.sample_at_end = True
    config_lib.set_field(cfg, field, value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        main.load_config("train", str(tmp_path / "work"), requested=cfg, overrides={field: value}, config_given=True)
    assert not (tmp_path / "work").exists()


def test_eval_on_a_mistyped_workdir_creates_nothing(tmp_path):
    proc = run_main(f"--workdir={tmp_path / 'typo'}", "--mode=sample", check=False)
    assert proc.returncode != 0 and "No checkpoint in" in proc.stderr
    assert not (tmp_path / "typo").exists()


def test_an_empty_validation_split_is_found_before_training(tmp_path):
    cfg = load_config("quickstart", "quick")
    docs = ["a long enough training document, " * 4] * 19 + ["short"]  # the last 5% validates: 5 bytes
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    cfg.data.update(source="files", files=(str(tmp_path / "docs.jsonl"),), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(train.StartupError, match="validation split .* no blocks.*eval_every=0"):
        train.train_and_evaluate(cfg, str(tmp_path / "work"))
    assert not checkpoint.Checkpointer(str(tmp_path / "work")).all_steps()


def test_a_step_is_saved_before_its_evaluation(tmp_path, monkeypatch):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=4, eval_every=2, checkpoint_every=2)

    def failing_eval(*args, **kwargs):
        raise RuntimeError("evaluation died")

    monkeypatch.setattr(evaluate, "evaluate", failing_eval)
    with pytest.raises(RuntimeError, match="evaluation died"):
        train.train_and_evaluate(cfg, str(tmp_path / "work"))
    assert checkpoint.Checkpointer(str(tmp_path / "work")).all_steps() == [2]


def test_zero_log_and_checkpoint_periods_mean_off(tmp_path):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=3, log_every=0, checkpoint_every=0, eval_every=0)
    train.train_and_evaluate(cfg, str(tmp_path / "work"))
    assert checkpoint.Checkpointer(str(tmp_path / "work")).all_steps() == [3]  # only the last step


def test_training_into_another_models_checkpoint_names_the_mismatch(tmp_path):
    """Below the config check (a checkpoint without a saved config, or a caller of the library):
    the parameter trees are compared before orbax is asked to restore."""
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=2, eval_every=0)
    train.train_and_evaluate(cfg, str(tmp_path / "work"))
    cfg.model.n_blocks = 3
    with pytest.raises(train.StartupError, match=r"blocks_2/.*saved nothing.*train in another workdir"):
        train.train_and_evaluate(cfg, str(tmp_path / "work"))


def test_a_run_says_what_it_trains_when_it_saves_and_where_its_outputs_went(tmp_path, caplog):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=2, eval_every=0, checkpoint_every=1)
    with caplog.at_level("INFO"):
        train.train_and_evaluate(cfg, str(tmp_path / "work"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Training a dit model (objective 'subs')" in text and "evaluators: none" in text
    assert re.search(r"Parameters: [\d,]+ \(\d+\.\d+M\)", text) and re.search(r"  blocks_\*  .*\(2 x ", text)
    assert re.search(r"Compiled the train step in [\d.]+ s; memory per device: [\d.]+ GiB \(arguments", text)
    assert "Saving checkpoint step 1 in" in text and "Saving checkpoint step 2 in" in text
    assert f"Done: checkpoints in {tmp_path / 'work' / 'checkpoints'}" in text and "--mode=eval" in text
    assert any(p.stat().st_size > 0 for p in (tmp_path / "work" / "tb").iterdir())  # events flushed
