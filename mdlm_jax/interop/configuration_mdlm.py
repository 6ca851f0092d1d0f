"""``MDLMConfig``: the Hugging Face config of an MDLM DiT (``config.json`` of model_type ``mdlm``).

Every ``hf`` export ships this file beside ``modeling_mdlm.py`` and ``torch_dit.py`` (the remote code
its ``auto_map`` names), so ``AutoConfig.from_pretrained(export_dir, trust_remote_code=True)`` needs
no mdlm_jax. The field names are those of the ``kuleshov-group/mdlm-owt`` release.
"""

from typing import Optional

from transformers import PretrainedConfig


class MDLMConfig(PretrainedConfig):
    """``vocab_size`` counts the mask token; ``hidden_dim``, ``cond_dim``, ``n_blocks``, ``n_heads``,
    ``dropout`` and ``time_conditioning`` size the DiT; ``model_length`` is the training sequence
    length and ``mask_token_id`` the mask's index (``vocab_size - 1`` for GPT-2). The defaults are
    the paper's small OpenWebText model."""

    model_type = "mdlm"

    def __init__(self, vocab_size: int = 50258, model_length: int = 1024, hidden_dim: int = 768,
                 cond_dim: int = 128, n_blocks: int = 12, n_heads: int = 12, dropout: float = 0.1,
                 time_conditioning: bool = False, mask_token_id: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.model_length = vocab_size, model_length
        self.hidden_dim, self.cond_dim, self.n_blocks, self.n_heads = hidden_dim, cond_dim, n_blocks, n_heads
        self.dropout, self.time_conditioning = dropout, time_conditioning
        self.mask_token_id = mask_token_id
