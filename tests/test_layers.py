"""The "never" arrows of docs/ARCHITECTURE.md, checked on what each layer really imports."""

import json
import subprocess
import sys

import pytest

FORBIDDEN = {
    # the layer imported: the mdlm_jax modules it must not pull in
    "mdlm_jax.diffusion.sampling": ("mdlm_jax.models", "mdlm_jax.objectives", "mdlm_jax.data", "mdlm_jax.training",
                                    "mdlm_jax.evals", "mdlm_jax.experiment", "mdlm_jax.main"),
    "mdlm_jax.diffusion.losses": ("mdlm_jax.models", "mdlm_jax.objectives", "mdlm_jax.data", "mdlm_jax.training"),
    "mdlm_jax.models": ("mdlm_jax.objectives", "mdlm_jax.data", "mdlm_jax.training", "mdlm_jax.evals",
                        "mdlm_jax.experiment", "mdlm_jax.main"),
    "mdlm_jax.objectives": ("mdlm_jax.models", "mdlm_jax.data", "mdlm_jax.training", "mdlm_jax.evals",
                            "mdlm_jax.experiment", "mdlm_jax.main"),
    "mdlm_jax.data": ("mdlm_jax.models", "mdlm_jax.objectives", "mdlm_jax.training", "mdlm_jax.evals",
                      "mdlm_jax.experiment", "mdlm_jax.main"),
    "mdlm_jax.interop.cli": ("mdlm_jax.training.train", "mdlm_jax.main", "mdlm_jax.tools"),
    "mdlm_jax.evals": ("mdlm_jax.training.train", "mdlm_jax.main", "mdlm_jax.tools"),
}


def imported(module: str) -> list[str]:
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mdlm_jax'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_it(module):
    loaded = imported(module)
    bad = [m for m in loaded for f in FORBIDDEN[module] if m == f or m.startswith(f + ".")]
    assert not bad, f"{module} imports {bad}"
