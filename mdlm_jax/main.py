"""Entry point: ``python -m mdlm_jax.main --config=configs/X.py --workdir=DIR --mode=train|eval|zero_shot|sample``.

On a workdir that holds a checkpoint, every mode starts from the config saved with it, so
``--mode=eval --workdir=DIR`` needs nothing else; ``--config.a.b=v`` changes the fields it names
(see ``mdlm_jax/run_config.py`` for which changes are refused). ``--step`` picks a checkpoint other
than the latest for eval, sample and zero_shot, which restore only the parameters they read.

``zero_shot`` evaluates the checkpoint on ``eval.zero_shot_sets`` (the paper's Table 3; see
``mdlm_jax/evals/zero_shot.py``), prints the table and writes ``zero_shot.json``.
"""

from __future__ import annotations

import json
import logging as logging_std
import os
import re
import sys

import jax
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from mdlm_jax import checkpoint, config as config_lib, experiment, interop, run_config
from mdlm_jax.evals import evaluate, sample, zero_shot
from mdlm_jax.training import task as task_lib, train

_DEFAULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULTS, "Experiment config file (configs/*.py); on a workdir with a checkpoint, the checkpoint's "
    "saved config is used and this only needs to be given to start a new run.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events, samples (local or gs://).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "zero_shot", "sample"], "What to run.")
_STEP = flags.DEFINE_integer("step", None, "eval / sample / zero_shot: the checkpoint step (default: the latest).")
_ALLOW = flags.DEFINE_bool("allow_config_change", False,
                           "Use changed model or data fields although the workdir's checkpoint was trained "
                           "with others (refused without this).")
flags.mark_flags_as_required(["workdir"])


def load_config(mode: str, workdir: str, *, requested, overrides: dict, config_given: bool,
                step: int | None = None, allow_change: bool = False):
    """(the run's config, the checkpoint step it came from or None), validated for ``mode``.

    Raises ValueError / FileNotFoundError with a message naming the problem and the fix; creates
    nothing on disk.
    """
    has_checkpoint = checkpoint.has_checkpoint(workdir)
    no_checkpoint = (f"No checkpoint in {workdir}: check --workdir, train first (--mode=train), import one "
                     "(python -m mdlm_jax.interop import ...), or evaluate a pretrained BERT as it is "
                     "(--config=... --config.model.pretrained=DIR).")
    if mode != "train" and not has_checkpoint and not config_given:
        raise FileNotFoundError(no_checkpoint)
    if mode == "train" and step is not None:
        raise ValueError("--step chooses the checkpoint of eval, sample and zero_shot; training resumes from the "
                         "latest one.")
    if requested.model.get("pretrained"):  # its architecture, before comparing with a saved config
        interop.apply_pretrained_architecture(requested)
    saved, found = checkpoint.saved_config(workdir, step=step) if has_checkpoint else (None, None)
    if found is not None and saved is None:
        logging.warning("Checkpoint step %d in %s has no saved config: using the command line's.", found, workdir)
    if saved is None and not config_given:
        raise ValueError(f"{workdir} holds no checkpoint with a saved config: pass --config=configs/X.py.")
    resolved = run_config.resolve(mode, requested, overrides, saved, config_given=config_given,
                                  allow_change=allow_change, where=f"{workdir} (step {found})")
    for line in resolved.warnings:
        logging.warning("%s", line)
    for line in resolved.notes:
        logging.info("%s", line)
    if mode != "train" and not has_checkpoint and not resolved.cfg.model.get("pretrained"):
        raise FileNotFoundError(no_checkpoint)
    config_lib.validate(resolved.cfg, mode)
    return resolved.cfg, found


def _weights(s, workdir: str, step: int, *, use_ema: bool) -> task_lib.Weights:
    """Only the parameter tree the mode reads: no optimizer state, no second copy."""
    tree = checkpoint.restore_params(workdir, s.abstract_state.params, use_ema=use_ema, step=step)
    return task_lib.Weights(params=None if use_ema else tree, ema_params=tree if use_ema else None)


class _QuietLibraries(logging_std.Filter):
    """Keeps orbax's and jax's own INFO chatter out of the progress log (warnings still show)."""

    def filter(self, record):
        noisy = any(part in record.pathname for part in ("/orbax/", "/jax/_src/", "/grain/"))
        return record.levelno >= logging_std.WARNING or not noisy


def parse_flags(argv):
    """absl's parser, with a mistyped config field reported in one line (not a 55-line traceback)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"Error: {e}\nPass --helpfull to see the flags.")
    except (KeyError, AttributeError) as e:
        message = e.args[0] if e.args else str(e)
        match = re.match(r"'?([^'\n]+)'?(?:\n(.*))?", str(message), re.S)
        field, hint = (match.group(1), match.group(2)) if match else (str(message), None)
        given = next((a.split("=")[0] for a in argv if a.startswith("--config.") and f".{field}" in a), "--config.")
        sys.exit(f"Error: {given}: the config has no field {field!r}."
                 + (f" {hint.strip()}" if hint else "") + " The fields are listed in mdlm_jax/config.py.")


def main(argv):
    del argv
    logging_std.getLogger("absl").addFilter(_QuietLibraries())
    logging_std.getLogger("jax").setLevel(logging_std.WARNING)
    mode, workdir = _MODE.value, _WORKDIR.value
    try:
        cfg, step = load_config(mode, workdir, requested=_CONFIG.value,
                                overrides=config_flags.get_override_values(flags.FLAGS["config"]),
                                config_given=flags.FLAGS["config"].present, step=_STEP.value,
                                allow_change=_ALLOW.value)
        s = experiment.build(cfg, mode)
        if mode != "train" and step is None:  # no checkpoint: model.pretrained as it is
            tree = train.pretrained_params(s)
            weights = task_lib.Weights(params=tree, ema_params=tree)
        elif mode != "train":
            weights = _weights(s, workdir, step, use_ema=mode == "sample" or cfg.eval.use_ema)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"Error: {e}")
    if mode == "train":
        try:
            train.train_and_evaluate(cfg, workdir, s=s)
        except train.StartupError as e:
            sys.exit(f"Error: {e}")
        except train.TrainingDiverged as e:
            logging.error("%s", e)
            sys.exit(1)
        return
    if mode == "eval":
        metrics = evaluate.evaluate(s, weights, step=step)
        path = epath.Path(workdir) / (f"eval_step_{step}.json" if step is not None else "eval_pretrained.json")
        if jax.process_index() == 0:
            path.write_text(json.dumps(dict(metrics, step=step), indent=2))
            logging.info("Wrote %s", path)
    elif mode == "zero_shot":
        try:
            result = zero_shot.run(s, weights, step=step, workdir=workdir)
        except zero_shot.NoZeroShotData as e:
            logging.error("%s", e)
            sys.exit(1)
        if jax.process_index() == 0:
            print(result["report"], flush=True)
    else:
        sample.write_samples(s, weights, sample.new_sample_path(workdir, step, s))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
