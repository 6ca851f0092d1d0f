"""``python -m mdlm_jax.data prepare|merge ...``: see ``mdlm_jax.data.cli``."""

import sys

from mdlm_jax.data.cli import main

sys.exit(main())
