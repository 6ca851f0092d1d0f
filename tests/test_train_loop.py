"""The training loop end to end: every config runs, loss goes down, resume is exact, failures are clear."""

import logging
import pathlib

import numpy as np
import pytest
from tests_util import REPO, load_config

from mdlm_jax import checkpoint
from mdlm_jax.training import train
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))


def test_every_paper_config_is_shipped():
    assert {"quickstart", "lm1b_mdlm", "lm1b_ar", "owt_mdlm", "owt_ar", "text8_mdlm"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_builds_and_runs_a_step(name, tmp_path):
    full = load_config(name)
    assert full.model.hidden_size % full.model.n_heads == 0
    cfg = load_config(name, "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    metrics = train.train_and_evaluate(cfg, str(tmp_path / "work"))
    assert np.isfinite(metrics["nelbo"]) and metrics["tokens"] > 0
    assert checkpoint.Checkpointer(str(tmp_path / "work")).latest_step() == cfg.train.steps


def test_quickstart_loss_goes_down(tmp_path):
    cfg = load_config("quickstart")
    cfg.model.update(n_blocks=2, hidden_size=64, n_heads=2)
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=60, log_every=20, eval_every=60, checkpoint_every=60, sample_at_end=False)
    cfg.eval.max_batches = 4
    metrics = train.train_and_evaluate(cfg, str(tmp_path / "work"))
    # The untrained model is uniform over 259 byte/special tokens: NELBO about log(259) = 5.56.
    assert metrics["nelbo"] < 0.8 * np.log(259), metrics


def test_nan_loss_stops_the_run_naming_step_and_checkpoint(tmp_path):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=6, checkpoint_every=2, eval_every=0, log_every=1)
    cfg.optim.update(lr=1e30, warmup_steps=0, grad_clip=0.0)
    with pytest.raises(train.TrainingDiverged, match=r"at step \d+: stopping. Last good checkpoint"):
        train.train_and_evaluate(cfg, str(tmp_path / "work"))


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=4, checkpoint_every=2, eval_every=0, keep_checkpoints=5)
    work = str(tmp_path / "work")
    train.train_and_evaluate(cfg, work)
    step_dir = pathlib.Path(work) / "checkpoints" / "4"
    victims = [p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 0]
    for p in victims:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    cfg.train.steps = 6
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(cfg, work)
    assert any("4" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert checkpoint.Checkpointer(work).latest_step() == 6
