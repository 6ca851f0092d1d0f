"""Generation from a trained state: MDLM's reverse process or the AR baseline, decoded to text."""

from __future__ import annotations

import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from mdlm_jax.diffusion import sampling


def generate(s, params, *, num_samples: int, num_steps: int, predictor: str, seed: int):
    """Draws ``num_samples`` sequences of ``data.seq_len`` tokens.

    Returns (tokens (N, L) int32 numpy, NFEs, wall seconds including compilation).
    """
    task, length = s.task, s.cfg.data.seq_len
    key = jax.random.key(seed)
    model = task.model
    if task.is_ar:
        x_init = jnp.full((num_samples, length), s.tokenizer.bos_id, jnp.int32)
        fn = lambda p, k: sampling.sample_ar(  # noqa: E731
            lambda x: model.apply({"params": p}, x), k, x_init, mask_id=task.mask_id)
    else:
        x_init = jnp.full((num_samples, length), task.mask_id, jnp.int32)
        fn = lambda p, k: sampling.sample(  # noqa: E731
            lambda x, sig: model.apply({"params": p}, x, sig), k, x_init, schedule=task.schedule,
            mask_id=task.mask_id, num_steps=num_steps, predictor=predictor)
    start = time.perf_counter()
    with jax.set_mesh(s.mesh):
        out = jax.jit(fn)(params, key)
        tokens = np.asarray(jax.device_get(out.tokens))
    return tokens, int(out.nfe), time.perf_counter() - start


def print_samples(s, state) -> list[str]:
    """Generates ``sample.num_samples`` texts with the EMA params and logs them (process 0)."""
    c = s.cfg.sample
    tokens, nfe, seconds = generate(s, state.ema_params, num_samples=c.num_samples, num_steps=c.num_steps,
                                    predictor=c.predictor, seed=c.seed)
    texts = [s.tokenizer.decode(row.tolist()) for row in tokens]
    if jax.process_index() == 0:
        logging.info("%d samples (%s, T=%d, %d NFEs, %.1f s):", len(texts), c.predictor, c.num_steps, nfe, seconds)
        for i, text in enumerate(texts):
            logging.info("--- sample %d ---\n%s", i, text)
    return texts


def write_samples(s, state, path) -> str:
    """Writes samples as JSONL (text, token ids, NFEs, seed), one object per line; returns the path."""
    c = s.cfg.sample
    tokens, nfe, seconds = generate(s, state.ema_params, num_samples=c.num_samples, num_steps=c.num_steps,
                                    predictor=c.predictor, seed=c.seed)
    if jax.process_index() == 0:
        path = epath.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(
            json.dumps(dict(text=s.tokenizer.decode(row.tolist()), token_ids=row.tolist(), nfe=nfe, seed=c.seed,
                            predictor=c.predictor, num_steps=c.num_steps)) + "\n" for row in tokens))
        logging.info("Wrote %d samples to %s (%d NFEs, %.1f s)", len(tokens), path, nfe, seconds)
    return path
