"""The quickstart's quick run on a user's own dataset, objective, backbone and evaluator.

    python -m mdlm_jax.main --config=tests/plugins/toy_plugin_config.py --workdir=DIR
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toy_plugins  # noqa: E402,F401  pylint: disable=unused-import  (registers the pieces)

from mdlm_jax.config import apply_arg, default_config  # noqa: E402


def get_config(arg=None):
    c = apply_arg(default_config(), "quick")
    c.data.source = "plugin_countdown"
    c.model.name = "plugin_mean_mixer"
    c.diffusion.parameterization = "plugin_fixed_rate_mlm"
    c.train.update(steps=6, log_every=3, eval_every=3, checkpoint_every=3)
    c.evals.accuracy = dict(type="plugin_masked_accuracy", every=2)
    return c
