"""GLUE fine-tuning of a BERT (pretrained, or fine-tuned with MDLM) with the recipe of the paper's
Table 4, which is Hugging Face ``run_glue.py``'s defaults: 3 epochs, AdamW lr 2e-5 decaying
linearly to 0 with no warmup and no weight decay, betas (0.9, 0.999), eps 1e-8, gradient norm
clipped at 1, batch 16, inputs padded to 128 tokens, seed 42.

The classifier is ``BertForSequenceClassification``'s: the pooler (dense + tanh on the [CLS]
state; from the checkpoint when it has one, else initialised as HF does), dropout, and a linear
layer to the task's classes (cross-entropy) or to one score (STS-B, mean squared error).
Batches are split over the ('data', 'fsdp') mesh axes and the parameters by their logical axis
names, as in training.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from mdlm_jax import parallel
from mdlm_jax.glue import metrics as metrics_lib
from mdlm_jax.glue import tasks as tasks_lib
from mdlm_jax.models import bert
from mdlm_jax.models.layers import partitioned

_normal = nn.initializers.normal(0.02)  # HF's initializer_range


@dataclasses.dataclass(frozen=True)
class Recipe:
    """run_glue.py's defaults (the paper's Table 4 recipe); ``max_steps`` > 0 stops early (tests)."""

    epochs: float = 3.0
    learning_rate: float = 2e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    max_length: int = 128
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    max_steps: int = -1
    dtype: str = "float32"


class SequenceClassifier(nn.Module):
    """BERT encoder -> pooler(tanh(W h_[CLS] + b)) -> dropout -> classifier: logits (B, num_labels)."""

    config: bert.BertConfig
    num_labels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, token_types, attention_mask, train: bool = False):
        hidden = bert.Bert(self.config, self.dtype, name="bert").encode(tokens, attention_mask, train,
                                                                        token_type_ids=token_types)
        d = self.config.hidden_size
        pooled = jnp.tanh(nn.Dense(d, kernel_init=partitioned(_normal, ("embed", "mlp")),
                                   bias_init=partitioned(nn.initializers.zeros, ("mlp",)), name="pooler")(hidden[:, 0]))
        pooled = nn.Dropout(self.config.hidden_dropout_prob)(pooled, deterministic=not train)
        return nn.Dense(self.num_labels, kernel_init=partitioned(_normal, ("mlp", None)),
                        bias_init=partitioned(nn.initializers.zeros, (None,)), name="classifier")(pooled)


@dataclasses.dataclass(frozen=True)
class Features:
    """Padded model inputs of one split: tokens, token_types, attention_mask (N, max_length) int32;
    labels (N,) int32 or float32."""

    tokens: np.ndarray
    token_types: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def truncate_pair(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """The fast tokenizers' 'longest_first' truncation, which run_glue uses: the shorter sequence
    (the first on a tie) keeps min(its length, budget // 2) tokens and the other the rest of the
    budget; a single sequence is cut at ``budget``."""
    if b is None:
        return a[:budget], None
    if len(a) + len(b) <= budget:
        return a, b
    first_short = len(a) <= len(b)
    short, long = (a, b) if first_short else (b, a)
    keep = min(len(short), budget // 2)
    short, long = short[:keep], long[:budget - keep]
    return (short, long) if first_short else (long, short)


def encode(tokenizer, examples: tasks_lib.Examples, max_length: int) -> Features:
    """[CLS] a [SEP] (b [SEP]), token types 0 for a's part and 1 for b's, padded with [PAD] to
    ``max_length`` (attention mask 0 there)."""
    cls_id, sep_id, pad_id = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
    first = tokenizer.encode_batch(examples.text_a)
    second = tokenizer.encode_batch(examples.text_b) if examples.text_b is not None else [None] * len(first)
    n = len(first)
    tokens = np.full((n, max_length), pad_id, np.int32)
    types = np.zeros((n, max_length), np.int32)
    mask = np.zeros((n, max_length), np.int32)
    for i, (a, b) in enumerate(zip(first, second)):
        a, b = truncate_pair(a.tolist(), None if b is None else b.tolist(), max_length - (3 if b is not None else 2))
        ids = [cls_id] + a + [sep_id]
        kinds = [0] * len(ids)
        if b is not None:
            ids += b + [sep_id]
            kinds += [1] * (len(b) + 1)
        tokens[i, :len(ids)], types[i, :len(ids)], mask[i, :len(ids)] = ids, kinds, 1
    return Features(tokens, types, mask, examples.labels)


def _loss(logits, labels, weights, regression: bool):
    """Weighted mean over the batch (padding rows have weight 0): MSE on the score or cross-entropy."""
    if regression:
        per_row = jnp.square(logits[:, 0] - labels)
    else:
        per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
    return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class Trainer:
    """Fine-tunes and evaluates one task: ``fit(train) -> losses``, ``predict(features) -> (N,)``."""

    def __init__(self, config: bert.BertConfig, encoder_params: dict, pooler: dict | None, spec: tasks_lib.TaskSpec,
                 recipe: Recipe, mesh):
        self.spec, self.recipe, self.mesh = spec, recipe, mesh
        self.model = SequenceClassifier(config, spec.num_labels, jnp.dtype(recipe.dtype))
        length = recipe.max_length
        dummy = (jnp.zeros((1, length), jnp.int32),) * 3
        boxed = jax.eval_shape(lambda k: self.model.init(k, *dummy), jax.random.key(0))["params"]
        self.shardings = parallel.logical_to_sharding(nn.get_partition_spec(boxed), nn.meta.unbox(boxed), mesh)
        fresh = nn.meta.unbox(self.model.init(jax.random.key(recipe.seed), *dummy)["params"])
        fresh["bert"] = {k: jax.tree.map(jnp.asarray, v) for k, v in encoder_params.items() if k in fresh["bert"]}
        if pooler is not None:
            fresh["pooler"] = jax.tree.map(jnp.asarray, pooler)
        self.params = jax.device_put(fresh, self.shardings)
        self.batch_sharding = parallel.batch_sharding(mesh)

    def _optimizer(self, total_steps: int):
        r = self.recipe
        schedule = optax.linear_schedule(r.learning_rate, 0.0, max(total_steps, 1))
        return optax.chain(optax.clip_by_global_norm(r.max_grad_norm),
                           optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=r.weight_decay))

    def _batches(self, features: Features, batch_size: int, order: np.ndarray):
        """Fixed-size batches in ``order``; the last one padded with weight-0 rows."""
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            weights = np.ones(batch_size, np.float32)
            if len(idx) < batch_size:
                weights[len(idx):] = 0
                idx = np.concatenate([idx, np.zeros(batch_size - len(idx), idx.dtype)])
            yield {"tokens": features.tokens[idx], "token_types": features.token_types[idx],
                   "attention_mask": features.attention_mask[idx], "labels": features.labels[idx],
                   "weights": weights}

    def _global(self, batch: dict) -> dict:
        return parallel.make_global_batch(batch, self.batch_sharding)

    def fit(self, train: Features) -> list[float]:
        r = self.recipe
        parallel.check_batch_size(r.batch_size, self.mesh, name="--batch_size")
        steps_per_epoch = math.ceil(len(train) / r.batch_size)
        total = math.ceil(r.epochs * steps_per_epoch)
        if r.max_steps > 0:
            total = min(total, r.max_steps)
        optimizer = self._optimizer(total)
        regression = self.spec.is_regression
        model = self.model

        def step(params, opt_state, batch, key):
            def loss_fn(p):
                logits = model.apply({"params": p}, batch["tokens"], batch["token_types"], batch["attention_mask"],
                                     train=True, rngs={"dropout": key})
                return _loss(logits, batch["labels"], batch["weights"], regression)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        params, opt_state = self.params, jax.jit(optimizer.init)(self.params)
        # Outputs laid out as the inputs, so the second step does not compile again.
        replicated = parallel.replicated(self.mesh)
        opt_shardings = jax.tree.map(lambda x: x.sharding if len(x.sharding.device_set) > 1 else replicated, opt_state)
        opt_state = jax.device_put(opt_state, opt_shardings)
        step = jax.jit(step, out_shardings=(self.shardings, opt_shardings, None), donate_argnums=(0, 1))
        rng = np.random.default_rng(r.seed)
        key = jax.random.key(r.seed)
        losses, done = [], 0
        with jax.set_mesh(self.mesh), tqdm.tqdm(total=total, desc=f"{self.spec.name} train",
                                                disable=jax.process_index() != 0) as bar:
            while done < total:
                for batch in self._batches(train, r.batch_size, rng.permutation(len(train))):
                    params, opt_state, loss = step(params, opt_state, self._global(batch), jax.random.fold_in(key, done))
                    done += 1
                    losses.append(loss)  # a device scalar: no host sync per step
                    bar.update()
                    if done % 50 == 0:
                        bar.set_postfix(loss=f"{float(loss):.4f}")
                    if done >= total:
                        break
        self.params = params
        return [float(x) for x in jax.device_get(losses)]

    def predict(self, features: Features) -> np.ndarray:
        """Class ids (N,) int, or STS-B scores (N,) float."""
        model, regression = self.model, self.spec.is_regression

        @jax.jit
        def forward(params, batch):
            logits = model.apply({"params": params}, batch["tokens"], batch["token_types"], batch["attention_mask"])
            return logits[:, 0] if regression else jnp.argmax(logits, -1)

        size = self.recipe.eval_batch_size
        parallel.check_batch_size(size, self.mesh, name="--eval_batch_size")
        out = []
        with jax.set_mesh(self.mesh):
            for batch in tqdm.tqdm(self._batches(features, size, np.arange(len(features))),
                                   total=math.ceil(len(features) / size), desc=f"{self.spec.name} eval",
                                   disable=jax.process_index() != 0, leave=False):
                out.append(np.asarray(jax.device_get(forward(self.params, self._global(batch)))))
        return np.concatenate(out)[:len(features)]


def run_task(task: str, splits: dict[str, tasks_lib.Examples], *, config: bert.BertConfig, encoder_params: dict,
             pooler: dict | None, tokenizer, recipe: Recipe, mesh, max_train_examples: int = -1,
             max_eval_examples: int = -1) -> dict:
    """Fine-tunes on ``splits['train']`` and scores every evaluation split of ``task``:
    {split: {metric: value}, 'train_loss': mean of the last third of the steps, 'train_examples': N}."""
    spec = tasks_lib.get_task(task)
    train = _head(splits["train"], max_train_examples)
    trainer = Trainer(config, encoder_params, pooler, spec, recipe, mesh)
    losses = trainer.fit(encode(tokenizer, train, recipe.max_length))
    result: dict = {"train_examples": len(train), "train_loss": float(np.mean(losses[-max(1, len(losses) // 3):]))}
    for split in spec.eval_splits:
        examples = _head(splits[split], max_eval_examples)
        preds = trainer.predict(encode(tokenizer, examples, recipe.max_length))
        result[split] = metrics_lib.task_metrics(task, examples.labels, preds)
        logging.info("%s %s: %s", task, split, result[split])
    return result


def _head(examples: tasks_lib.Examples, n: int) -> tasks_lib.Examples:
    """The first ``n`` examples (quick runs); all of them for n <= 0."""
    if n <= 0:
        return examples
    return dataclasses.replace(examples, text_a=examples.text_a[:n],
                               text_b=None if examples.text_b is None else examples.text_b[:n],
                               labels=examples.labels[:n])
