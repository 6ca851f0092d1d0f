"""Entry point: ``python -m mdlm_jax.main --config=configs/X.py --workdir=DIR --mode=train|eval|zero_shot|sample``.

``zero_shot`` evaluates the workdir's checkpoint on ``eval.zero_shot_sets`` (the paper's Table 3;
see ``mdlm_jax/zero_shot.py``), prints the table and writes ``zero_shot.json``.

Config fields are overridden from the command line: ``--config.train.steps=100``.
"""

from __future__ import annotations

import json
import logging as logging_std
import sys

import jax
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from mdlm_jax import checkpoint, evaluate, sample, train, zero_shot

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events, samples (local or gs://).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "zero_shot", "sample"], "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


def _restore(s, workdir: str):
    ckpt = checkpoint.Checkpointer(workdir, async_save=False)
    try:
        restored = ckpt.restore(s.abstract_state)
    finally:
        ckpt.close()
    if restored is None:
        raise app.UsageError(f"No checkpoint in {workdir}: train first (--mode=train) or import one "
                             "(python -m mdlm_jax.interop import ...).")
    return restored[0], restored[2]


class _QuietLibraries(logging_std.Filter):
    """Keeps orbax's and jax's own INFO chatter out of the progress log (warnings still show)."""

    def filter(self, record):
        noisy = any(part in record.pathname for part in ("/orbax/", "/jax/_src/", "/grain/"))
        return record.levelno >= logging_std.WARNING or not noisy


def main(argv):
    del argv
    logging_std.getLogger("absl").addFilter(_QuietLibraries())
    logging_std.getLogger("jax").setLevel(logging_std.WARNING)
    cfg, workdir = _CONFIG.value, _WORKDIR.value
    if _MODE.value == "train":
        try:
            train.train_and_evaluate(cfg, workdir)
        except train.TrainingDiverged as e:
            logging.error("%s", e)
            sys.exit(1)
        return
    s = train.setup(cfg)
    state, step = _restore(s, workdir)
    if _MODE.value == "eval":
        metrics = evaluate.evaluate(s, state, step=step)
        path = epath.Path(workdir) / f"eval_step_{step}.json"
        if jax.process_index() == 0:
            path.write_text(json.dumps(dict(metrics, step=step), indent=2))
            logging.info("Wrote %s", path)
    elif _MODE.value == "zero_shot":
        try:
            result = zero_shot.run(s, state, step=step, workdir=workdir)
        except zero_shot.NoZeroShotData as e:
            logging.error("%s", e)
            sys.exit(1)
        if jax.process_index() == 0:
            print(result["report"], flush=True)
    else:
        sample.write_samples(s, state, epath.Path(workdir) / "samples" / f"step_{step}.jsonl")


if __name__ == "__main__":
    app.run(main)
