"""Backbones by registry (``model.name``): the DiT (bidirectional for MDLM, causal for the AR
baseline) and BERT (Hugging Face's ``BertForMaskedLM``, time-free); ``register_model`` adds one."""

from mdlm_jax.models.registry import MODELS, get_model, register_model
from mdlm_jax.models import bert, dit  # noqa: E402  (register 'bert' and 'dit')
from mdlm_jax.models.bert import Bert  # noqa: E402
from mdlm_jax.models.dit import DiT  # noqa: E402
from mdlm_jax.models.layers import constrain  # noqa: E402

# Per backbone: the output projection of its ``return_hidden=True`` output, for the fused losses, and
# the part of the params tree that projection reads (the fused loss differentiates only that part).
_PROJECTIONS = {DiT: (dit.project_hidden, dit.output_head), Bert: (bert.project_hidden, bert.output_head)}


def has_projection(model) -> bool:
    """Whether ``project_hidden`` knows ``model``'s output layer (so the loss can be fused with it)."""
    return type(model) in _PROJECTIONS


def _registered(model):
    if not has_projection(model):
        raise ValueError(f"model.loss_chunk needs the output projection of {type(model).__name__}, which has none "
                         "registered in mdlm_jax.models: set model.loss_chunk=0.")
    return _PROJECTIONS[type(model)]


def project_hidden(model, params, hidden):
    """logits (..., padded V) = the output layer of ``model`` on its ``return_hidden`` output (..., D),
    pad columns not cut (the fused losses exclude them); (B, L, V) logits are constrained to
    (batch, length, vocab) as the model constrains its own."""
    logits = _registered(model)[0](model, params, hidden)
    return constrain(logits, ("batch", "length", "vocab")) if logits.ndim == 3 else logits


def output_head(model, params) -> dict:
    """The subtree of ``params`` that ``project_hidden`` reads (it can be given that alone)."""
    return _registered(model)[1](params)


__all__ = ["Bert", "DiT", "MODELS", "get_model", "has_projection", "output_head", "project_hidden", "register_model"]
