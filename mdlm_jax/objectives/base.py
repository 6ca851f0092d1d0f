"""The objective interface and its registry.

An objective turns a batch into per-token losses for training and evaluation, says what its model
needs (causal attention, the noise level sigma) and how to sample from it. The train step, the
evaluator and the sampler driver call only these methods, so an objective is one module that calls
``register_objective`` and one config value (``diffusion.parameterization``): no edit elsewhere.
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar

from mdlm_jax.diffusion import losses

# apply(tokens (B, L) int, sigma (B,) or None) -> (model output, nll or None): the model's forward
# with the ``nll`` argument of the loss functions (see ``task._outputs``).
Apply = Callable


class Objective(abc.ABC):
    """Base class. Subclasses set the class attributes and implement the abstract methods.

    ``causal``: the model attends causally; ``uses_sigma``: the model is given sigma;
    ``bound``: evaluation reports an upper bound on the NLL (diffusion) rather than the NLL itself
    (AR); ``predictors``: the ``sample.predictor`` values it supports (empty: it has one sampler and
    ignores the field); ``starts_with_bos``: samples always start from a fixed BOS;
    ``token_nll_loss``: the loss reads the logits only through the ``nll`` argument of the loss
    functions (``losses.token_nll`` by default), so the output layer can be fused with it.
    """

    name: ClassVar[str] = ""
    causal: ClassVar[bool] = False
    uses_sigma: ClassVar[bool] = True
    bound: ClassVar[bool] = True
    predictors: ClassVar[tuple[str, ...]] = ()
    starts_with_bos: ClassVar[bool] = False
    token_nll_loss: ClassVar[bool] = False

    def __init__(self, cfg, *, mask_id: int, schedule):
        self.cfg, self.mask_id, self.schedule = cfg, mask_id, schedule

    @abc.abstractmethod
    def prepare(self, batch: dict, rng, sobol_rng, sobol_offset=0) -> dict:
        """The loss inputs of the global batch {'input_ids', 'attention_mask', ...} (B, L): whatever
        is random (t, masks) is drawn here, over the whole batch, so microbatching cannot change it;
        draws the batch carries itself (recorded ones) are used instead. -> dict of (B, ...) arrays."""

    @abc.abstractmethod
    def token_losses(self, apply: Apply, ex: dict) -> losses.LossOutput:
        """Per-token weighted losses of the prepared examples ``ex`` and their reduction."""

    def eval_passes(self) -> int:
        """How many independent draws per sequence evaluation averages (``eval.num_t``)."""
        return int(self.cfg.eval.num_t)

    @abc.abstractmethod
    def block_sampler(self, model, num_given: int) -> Callable:
        """(params, key, x_init (N, L)) -> ``sampling.SampleOutput`` with ``cfg.sample``'s settings;
        ``num_given``: how many leading positions of x_init are fixed (BOS and a prefix)."""

    def describe_sampler(self) -> str:
        """A short label of the sampler and its settings, for logs and sample files."""
        c = self.cfg.sample
        parts = [f"temperature={c.temperature}"] * (c.temperature != 1) + [f"top_p={c.top_p}"] * (c.top_p != 1)
        return " ".join(parts + [f"noise={c.noise}"] * (c.noise != "exact"))


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: makes ``cls`` the objective of ``diffusion.parameterization == cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name: the diffusion.parameterization value that selects it.")
    OBJECTIVES[cls.name] = cls
    return cls


def get_objective(cfg, *, mask_id: int, schedule) -> Objective:
    """The registered objective of ``cfg.diffusion.parameterization``, built for this config."""
    name = cfg.diffusion.parameterization
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown diffusion.parameterization {name!r}; choose one of {sorted(OBJECTIVES)} "
                         "(or register one with mdlm_jax.objectives.register_objective).")
    return OBJECTIVES[name](cfg, mask_id=mask_id, schedule=schedule)
