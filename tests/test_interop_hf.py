"""The ``hf`` export's remote code: ``transformers.AutoModelForMaskedLM.from_pretrained(dir,
trust_remote_code=True)`` loads an export offline, in a process where mdlm_jax cannot be imported,
and gives the JAX model's logits."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_interop_torch import SMALL, random_params  # noqa: E402

from mdlm_jax.interop import params_to_torch, save_hf  # noqa: E402
from mdlm_jax.interop.formats import HF_CODE  # noqa: E402
from mdlm_jax.models import DiT  # noqa: E402

# Runs in a fresh process: mdlm_jax is made unimportable, so the export must carry all its code.
LOAD_SCRIPT = """
import sys
sys.modules["mdlm_jax"] = None
import numpy as np, torch, transformers
export_dir, inputs, out = sys.argv[1:]
z = np.load(inputs)
config = transformers.AutoConfig.from_pretrained(export_dir, trust_remote_code=True)
model = transformers.AutoModelForMaskedLM.from_pretrained(export_dir, trust_remote_code=True)
with torch.no_grad():
    output = model(torch.from_numpy(z["tokens"]), torch.from_numpy(z["sigma"]))
    (as_tuple,) = model(torch.from_numpy(z["tokens"]), torch.from_numpy(z["sigma"]), return_dict=False)
fresh = transformers.AutoModelForMaskedLM.from_config(config, trust_remote_code=True)
np.savez(out, logits=output.logits.numpy(), as_tuple=as_tuple.numpy(),
         fresh_adaln=fresh.backbone.blocks[0].adaLN_modulation.weight.detach().numpy(),
         fresh_qkv=fresh.backbone.blocks[0].attn_qkv.weight.detach().numpy(),
         names=np.array(sorted(model.state_dict())))
print(type(config).__name__, config.model_type, type(model).__name__, type(output).__name__, model.training)
"""


@pytest.mark.parametrize("time_conditioning", [False, True], ids=["tc0", "tc1"])
def test_auto_model_loads_the_export_with_the_jax_logits(tmp_path, time_conditioning):
    model = DiT(**SMALL, time_conditioning=time_conditioning)
    params = random_params(model, seed=11)
    sd = params_to_torch(params, model)
    export = tmp_path / f"export_tc{int(time_conditioning)}"
    save_hf(export, sd, model, vocab_size=model.vocab_size, mask_id=model.vocab_size - 1, length=16)
    assert sorted(p.name for p in export.iterdir()) == sorted(["config.json", "model.safetensors", *HF_CODE])
    config = json.loads((export / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_mdlm.MDLM"

    rng = np.random.default_rng(2)
    tokens, sigma = rng.integers(0, model.vocab_size, (3, 16)), rng.uniform(0.1, 5.0, (3,)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", tokens=tokens, sigma=sigma)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(export), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MDLMConfig", "mdlm", "MDLM", "MaskedLMOutput", "False"]  # eval mode

    got = np.load(tmp_path / "out.npz")
    assert list(got["names"]) == sorted(f"backbone.{k}" for k in sd)  # the official names under backbone.
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(sigma)))
    assert got["logits"].dtype == np.float32 and np.abs(ours).max() > 1.0
    np.testing.assert_allclose(got["logits"], ours, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["as_tuple"], got["logits"])
    # from_config: the official init (adaLN zero, Linear U(+-1/sqrt(fan_in))), not transformers' own
    assert not got["fresh_adaln"].any()
    assert 0.5 / 8 < np.abs(got["fresh_qkv"]).max() <= 1 / 8
