"""The pure, jitted pieces of training: TrainState, its born-sharded init, train and eval steps.

Everything here is a function of (config, model, arrays); the loop and its side effects live in
``train.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from mdlm_jax import models, objectives, parallel
from mdlm_jax.training import optim
from mdlm_jax.diffusion import losses
from mdlm_jax.diffusion.schedules import NoiseSchedule, get_schedule


class Streams(NamedTuple):
    """Independent keys split once from a seed: parameter init, the per-step draws (folded with the
    step number), the Sobol sequence's shift (fixed for the run so the sequence continues across
    steps) and evaluation (folded with the batch index)."""

    init: jax.Array
    step: jax.Array
    sobol: jax.Array
    eval: jax.Array


def rng_streams(rng) -> Streams:
    """The four streams of ``rng`` (raw (2,) uint32 key data, as the TrainState stores it, or a typed key)."""
    key = rng if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(rng)
    return Streams(*jax.random.split(key, 4))


def step_keys(rng, step):
    """(noise, dropout) keys of train step ``step`` (the number of updates before it) from the state's rng."""
    return tuple(jax.random.split(jax.random.fold_in(rng_streams(rng).step, step)))


class Weights(NamedTuple):
    """The parameter trees evaluation and sampling read; restored without the optimizer state (a
    tree the mode does not read may be None)."""

    params: Any
    ema_params: Any


@flax.struct.dataclass
class TrainState:
    """step () int32; params / ema_params float32 trees; opt_state; rng (2,) uint32 raw key data."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Task:
    """What the steps close over: the model, the objective, the mask id, the schedule and the config."""

    model: nn.Module
    objective: objectives.Objective
    mask_id: int
    schedule: NoiseSchedule
    cfg: Any


def make_task(cfg, vocab_size: int, mask_id: int) -> Task:
    """Builds the objective (``diffusion.parameterization``), the model (``model.name``) and the
    schedule a config describes, for a vocabulary of ``vocab_size``."""
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} must lie in [0, vocab_size={vocab_size}).")
    if not (isinstance(cfg.model.loss_chunk, int) and cfg.model.loss_chunk >= 0):
        raise ValueError(f"model.loss_chunk must be an integer >= 0 (0 = unfused logits), got "
                         f"{cfg.model.loss_chunk!r}.")
    schedule = get_schedule(cfg.diffusion.schedule, **dict(cfg.diffusion.schedule_params))
    objective = objectives.get_objective(cfg, mask_id=mask_id, schedule=schedule)
    model = models.get_model(cfg, vocab_size=vocab_size, causal=objective.causal)
    return Task(model, objective, mask_id, schedule, cfg)


def prepare(task: Task, batch: dict, rng, sobol_rng, sobol_offset=0) -> dict:
    """Per-example loss inputs for the global batch (``Objective.prepare``): what is random is
    drawn here, over the whole batch, so microbatching cannot change it. ``sobol_rng`` and
    ``sobol_offset`` are used by the ``sobol`` time sampler only."""
    return task.objective.prepare(batch, rng, sobol_rng, sobol_offset)


def _outputs(task: Task, params, tokens, sigma, *, train: bool, rng, attention_mask=None):
    """(model output, the ``nll`` argument of the loss functions): logits and None (``token_nll``);
    or, when the objective's loss is ``token_nll`` and the backbone's output layer is registered
    (``models.project_hidden``), the output layer's input and a loss fused with that layer:
    ``losses.chunked_token_nll`` with ``model.loss_chunk`` > 0 (never materialises the (B, L, V)
    logits), else ``losses.projected_token_nll`` with ``model.fused_loss`` (the cross-entropy's
    gradient written out). A backbone with ``uses_attention_mask`` (BERT) is given the batch's
    padding mask. The logical axis rules are set here, so the models' activation constraints
    (``models.layers.constrain``) reach the mesh."""
    chunk = task.cfg.model.loss_chunk
    fused = chunk or (task.cfg.model.fused_loss and task.objective.token_nll_loss
                      and models.has_projection(task.model))
    kwargs = {"rngs": {"dropout": rng} if train else {}}
    if fused:
        kwargs["return_hidden"] = True
    if attention_mask is not None and getattr(task.model, "uses_attention_mask", False):
        kwargs["attention_mask"] = attention_mask
    with nn.logical_axis_rules(parallel.LOGICAL_RULES):
        out = task.model.apply({"params": params}, tokens, sigma, train=train, **kwargs)
    if not fused:
        return out, None
    project = functools.partial(models.project_hidden, task.model)
    vocab_size = task.model.vocab_size

    def nll(hidden, targets):
        with nn.logical_axis_rules(parallel.LOGICAL_RULES):  # the projection constrains its logits
            if chunk:
                return losses.chunked_token_nll(hidden, functools.partial(project, params), targets, task.mask_id,
                                                chunk, vocab_size)
            return losses.projected_token_nll(project, models.output_head(task.model, params), hidden, targets,
                                              task.mask_id, vocab_size)

    return out, nll


def token_losses(task: Task, params, ex: dict, *, train: bool, rng=None) -> losses.LossOutput:
    """The objective's loss of the examples in ``ex`` (the NELBO, or the AR NLL), per token and reduced."""
    return task.objective.token_losses(functools.partial(_outputs, task, params, train=train, rng=rng,
                                                         attention_mask=ex.get("am")), ex)


def loss_sums(task: Task, params, ex: dict, *, train: bool, rng=None):
    """(sum of per-token losses, (number of loss tokens, per-row loss sums (B,), per-row token
    counts (B,))) over the examples in ``ex``: a value and aux for ``jax.value_and_grad``."""
    out = token_losses(task, params, ex, train=train, rng=rng)
    return out.token_loss.sum(), (out.num_tokens, out.token_loss.sum(-1), out.weights.sum(-1))


def _split_microbatches(ex: dict, m: int) -> dict:
    """(B, ...) -> (m, B/m, ...) taking rows i::m into microbatch i, so each device's contiguous
    shard of the batch feeds every microbatch and the split moves no data between devices."""
    return {k: jnp.swapaxes(v.reshape((v.shape[0] // m, m) + v.shape[1:]), 0, 1) for k, v in ex.items()}


def _merge_microbatches(x):
    """(m, B/m, ...) -> (B, ...), the inverse of ``_split_microbatches``: row j of microbatch i is row j*m + i."""
    return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def train_step(state: TrainState, batch: dict, *, task: Task, optimizer: optax.GradientTransformation):
    """One optimizer update on the global batch (gradient accumulation over microbatches).

    Metrics: loss, grad_norm, tokens, lr; row_loss / row_tokens (B,) each row's loss sum and loss
    token count, in the batch's row order; t (B,) where the objective draws diffusion times."""
    cfg = task.cfg
    noise_rng, dropout_rng = step_keys(state.rng, state.step)
    ex = prepare(task, batch, noise_rng, rng_streams(state.rng).sobol, state.step * batch["input_ids"].shape[0])
    grad_fn = jax.value_and_grad(functools.partial(loss_sums, task, train=True), has_aux=True)
    m = cfg.train.microbatches
    if m == 1:
        (loss_sum, (tokens, row_loss, row_tokens)), grads = grad_fn(state.params, ex, rng=dropout_rng)
    else:
        def body(carry, inputs):
            i, mb = inputs
            (l, (n, rl, rn)), g = grad_fn(state.params, mb, rng=jax.random.fold_in(dropout_rng, i))
            acc_l, acc_n, acc_g = carry
            return (acc_l + l, acc_n + n, jax.tree_util.tree_map(jnp.add, acc_g, g)), (rl, rn)

        zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
        (loss_sum, tokens, grads), rows = jax.lax.scan(
            body, (jnp.zeros(()), jnp.zeros(()), zeros), (jnp.arange(m), _split_microbatches(ex, m)))
        row_loss, row_tokens = map(_merge_microbatches, rows)
    denom = jnp.maximum(tokens, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    ema = optim.ema_update(state.ema_params, params, step, cfg.train.ema) if cfg.train.ema else params
    metrics = dict(loss=loss_sum / denom, grad_norm=optax.tree.norm(grads), tokens=tokens,
                   lr=optim.learning_rate_schedule(cfg.optim)(state.step), row_loss=row_loss,
                   row_tokens=row_tokens)
    if "t" in ex:
        metrics["t"] = ex["t"]  # (B,): the diffusion times drawn, for the loss-by-t diagnostic and tests
    return state.replace(step=step, params=params, opt_state=opt_state, ema_params=ema), metrics


def make_train_step(task: Task, optimizer: optax.GradientTransformation, mesh: Mesh, shardings):
    """The one jitted, donated ``train_step`` over ``mesh`` (training, the benchmark and the tests
    all use it): (state, global batch) -> (state, replicated metrics), the state in ``shardings``
    and the batch split over data x fsdp."""
    return jax.jit(functools.partial(train_step, task=task, optimizer=optimizer),
                   in_shardings=(shardings, parallel.batch_sharding(mesh)),
                   out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)


def eval_step(params, batch: dict, rng, *, task: Task) -> dict:
    """Per-sequence sums for the PPL bound: loss (B,) = NELBO (or AR NLL) summed over each row's
    tokens, tokens (B,) = each row's number of loss tokens. ``rng``: this batch's key of the eval stream."""
    noise_rng, sobol_rng = jax.random.split(rng)
    ex = prepare(task, batch, noise_rng, sobol_rng)
    out = token_losses(task, params, ex, train=False)
    return dict(loss=out.token_loss.sum(-1), tokens=out.weights.sum(-1))


def _init_boxed(task: Task, optimizer, rng, seq_len: int) -> TrainState:
    params = task.model.init(rng_streams(rng).init, jnp.zeros((1, seq_len), jnp.int32), jnp.zeros((1,)))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      ema_params=params, rng=rng)


def state_shardings(task: Task, optimizer, mesh: Mesh, seq_len: int):
    """(abstract unboxed TrainState with shardings, TrainState of NamedShardings) from logical axes."""
    rng = jax.random.key_data(jax.random.key(0))
    boxed = jax.eval_shape(functools.partial(_init_boxed, task, optimizer, seq_len=seq_len), rng)
    abstract = nn.meta.unbox(boxed)
    shardings = parallel.logical_to_sharding(nn.get_partition_spec(boxed), abstract, mesh)
    abstract = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                      abstract, shardings)
    return abstract, shardings


def init_state(task: Task, optimizer, mesh: Mesh, shardings, seed: int, seq_len: int) -> TrainState:
    """A fresh TrainState, each array created directly in its sharding (never whole on one device)."""
    init = jax.jit(lambda r: nn.meta.unbox(_init_boxed(task, optimizer, r, seq_len)), out_shardings=shardings)
    with jax.set_mesh(mesh):
        return init(jax.random.key_data(jax.random.key(seed)))
