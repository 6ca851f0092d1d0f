"""PyTorch <-> JAX interop: the official MDLM DiT key layout (numpy only; torch is optional).

``formats`` reads and writes the official file layouts and imports torch only when a .ckpt/.pt
file is involved; ``torch_dit`` (a PyTorch DiT for parity checks) imports torch, and
``configuration_mdlm`` / ``modeling_mdlm`` (the Hugging Face remote code that ``save_hf`` ships)
import transformers: none of them is imported here. ``mappings`` keys the PyTorch layouts by
``model.name`` (the DiT's is ``params``, BERT's Hugging Face ``BertForMaskedLM`` names in
``hf_bert``) and the ``model.pretrained`` loaders.
"""

from mdlm_jax.interop.formats import load_any, save_hf, save_lightning, save_state_dict
from mdlm_jax.interop.hf_bert import load_hf_bert, save_hf_bert
from mdlm_jax.interop.mappings import (MAPPINGS, PRETRAINED, Pretrained, TorchMapping, apply_pretrained_architecture,
                                       mapping_for, pretrained_for, register_mapping)
from mdlm_jax.interop.params import params_from_torch, params_to_torch, torch_param_names

__all__ = ["MAPPINGS", "PRETRAINED", "Pretrained", "TorchMapping", "apply_pretrained_architecture", "load_any",
           "load_hf_bert", "mapping_for", "params_from_torch", "params_to_torch", "pretrained_for", "register_mapping",
           "save_hf", "save_hf_bert", "save_lightning", "save_state_dict", "torch_param_names"]
