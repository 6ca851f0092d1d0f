"""PyTorch <-> JAX interop: the official MDLM DiT key layout (numpy only; torch is optional).

``formats`` reads and writes the official file layouts and imports torch only when a .ckpt/.pt
file is involved; ``torch_dit`` (a PyTorch DiT for parity checks) imports torch, and
``configuration_mdlm`` / ``modeling_mdlm`` (the Hugging Face remote code that ``save_hf`` ships)
import transformers: none of them is imported here. ``mappings`` keys the PyTorch layouts by
``model.name`` (the DiT's is ``params``).
"""

from mdlm_jax.interop.formats import load_any, save_hf, save_lightning, save_state_dict
from mdlm_jax.interop.mappings import MAPPINGS, TorchMapping, mapping_for, register_mapping
from mdlm_jax.interop.params import params_from_torch, params_to_torch, torch_param_names

__all__ = ["MAPPINGS", "TorchMapping", "load_any", "mapping_for", "params_from_torch", "params_to_torch",
           "register_mapping", "save_hf", "save_lightning", "save_state_dict", "torch_param_names"]
