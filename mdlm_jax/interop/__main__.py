"""``python -m mdlm_jax.interop export|import ...``: see ``mdlm_jax.interop.cli``."""

import os
import sys

import jax

if sys.argv[1:2] == ["export"] and "JAX_PLATFORMS" not in os.environ:
    jax.config.update("jax_platforms", "cpu")  # export is host work: leave any accelerator alone

from mdlm_jax.interop.cli import main  # noqa: E402

sys.exit(main())
