"""Evaluators: the validation bound, samples, generative perplexity and the zero-shot sets, each
chosen by ``cfg.evals`` with its own period (``registry.py``)."""

from mdlm_jax.evals import evaluate, generation, zero_shot  # noqa: F401  (they register their evaluators)
from mdlm_jax.evals.registry import EVALUATORS, Evaluator, Interrupted, make_evaluators, register_evaluator

__all__ = ["EVALUATORS", "Evaluator", "Interrupted", "make_evaluators", "register_evaluator"]
