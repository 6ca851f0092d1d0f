"""PyTorch <-> JAX interop: the official MDLM DiT key layout (numpy only; torch is optional).

``formats`` reads and writes the official file layouts and imports torch only when a .ckpt/.pt
file is involved; ``torch_dit`` (a PyTorch DiT for parity checks) imports torch, and
``configuration_mdlm`` / ``modeling_mdlm`` (the Hugging Face remote code that ``save_hf`` ships)
import transformers: none of them is imported here.
"""

from mdlm_jax.interop.formats import load_any, save_hf, save_lightning, save_state_dict
from mdlm_jax.interop.params import params_from_torch, params_to_torch, torch_param_names

__all__ = ["load_any", "params_from_torch", "params_to_torch", "save_hf", "save_lightning",
           "save_state_dict", "torch_param_names"]
