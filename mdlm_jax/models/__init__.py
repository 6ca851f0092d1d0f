"""Backbones by registry (``model.name``): the DiT (bidirectional for MDLM, causal for the AR
baseline) and BERT (Hugging Face's ``BertForMaskedLM``, time-free); ``register_model`` adds one."""

from mdlm_jax.models.registry import MODELS, get_model, register_model
from mdlm_jax.models import bert, dit  # noqa: E402  (register 'bert' and 'dit')
from mdlm_jax.models.bert import Bert  # noqa: E402
from mdlm_jax.models.dit import DiT  # noqa: E402

# The output projection of each backbone's ``return_hidden=True`` output, for the fused loss.
_PROJECTIONS = {DiT: dit.project_hidden, Bert: bert.project_hidden}


def project_hidden(model, params, hidden):
    """logits (..., V) = the output layer of ``model`` on its ``return_hidden`` output (..., D)."""
    if type(model) not in _PROJECTIONS:
        raise ValueError(f"model.loss_chunk needs the output projection of {type(model).__name__}, which has none "
                         "registered in mdlm_jax.models: set model.loss_chunk=0.")
    return _PROJECTIONS[type(model)](model, params, hidden)


__all__ = ["Bert", "DiT", "MODELS", "get_model", "project_hidden", "register_model"]
