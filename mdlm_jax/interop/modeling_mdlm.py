"""``MDLM``: the Hugging Face masked-LM model of an MDLM DiT, for ``AutoModelForMaskedLM``.

Every ``hf`` export ships this file with ``configuration_mdlm.py`` and ``torch_dit.py``, which it
imports relatively, so that ``AutoModelForMaskedLM.from_pretrained(export_dir, trust_remote_code=True)``
needs no mdlm_jax. The backbone is ``torch_dit.DiT`` under the attribute ``backbone``: its
parameters carry the official names prefixed ``backbone.``, as in the export's ``model.safetensors``.
"""

from typing import Optional

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_mdlm import MDLMConfig
from .torch_dit import DiT


class MDLM(PreTrainedModel):
    """The DiT denoiser as a ``PreTrainedModel``; no loss (the diffusion objective needs the noise
    schedule, which is not part of the backbone)."""

    config_class = MDLMConfig
    base_model_prefix = "backbone"

    def __init__(self, config: MDLMConfig):
        super().__init__(config)
        self.backbone = DiT(vocab_size=config.vocab_size, hidden_size=config.hidden_dim, cond_dim=config.cond_dim,
                            n_blocks=config.n_blocks, n_heads=config.n_heads, dropout=config.dropout,
                            time_conditioning=config.time_conditioning)
        self.post_init()

    def _init_weights(self, module):
        # A fresh model gets the official init (adaLN-zero), not transformers' generic normal(0, 0.02).
        if isinstance(module, DiT):
            module.reset_parameters()

    def forward(self, input_ids: torch.LongTensor, timesteps: torch.Tensor, return_dict: Optional[bool] = None):
        """``input_ids`` (B, L), ``timesteps`` (B,) the noise level sigma (zeroed inside without time
        conditioning) -> ``MaskedLMOutput`` with raw ``logits`` (B, L, V) float32 (no SUBS), or
        ``(logits,)`` with ``return_dict=False``."""
        logits = self.backbone(input_ids, timesteps)
        if return_dict is False:
            return (logits,)
        return MaskedLMOutput(logits=logits)
