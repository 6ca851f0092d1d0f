"""A user's own pieces, outside the package: a dataset, an objective, a backbone and an evaluator,
each one class and one registry line (imported by ``toy_plugin_config.py``)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from mdlm_jax import data, evals, models, objectives
from mdlm_jax.diffusion import losses, sampling


@data.register_dataset
class Countdown(data.DocumentDataset):
    """Documents 'n n-1 ... 1 go', n in [3, 12]: every token after the first is determined."""

    name = "plugin_countdown"

    def documents(self, data_config, split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        return [" ".join(str(i) for i in range(n, 0, -1)) + " go" for n in rng.integers(3, 13, 200)]


@objectives.register_objective
class FixedRateMLM(objectives.Objective):
    """BERT's objective: a fixed 30% of tokens masked, cross-entropy on them (weight 1)."""

    name = "plugin_fixed_rate_mlm"
    uses_sigma = False
    bound = False

    def prepare(self, batch, rng, sobol_rng, sobol_offset=0):
        x0, am = batch["input_ids"], batch["attention_mask"].astype(jnp.float32)
        masked = jax.random.uniform(rng, x0.shape) < 0.3
        return dict(x0=x0, am=am, xt=jnp.where(masked, self.mask_id, x0))

    def token_losses(self, apply, ex):
        out, nll = apply(ex["xt"], None)
        return losses.masked_diffusion_loss(out, ex["x0"], ex["xt"], jnp.ones(ex["x0"].shape[:1]), ex["am"],
                                            self.mask_id, nll=nll)

    def block_sampler(self, model, num_given):
        return lambda p, k, x: sampling.sample_first_hitting(  # noqa: E731
            lambda y, s: model.apply({"params": p}, y, s), k, x, mask_id=self.mask_id)


class MeanMixer(nn.Module):
    """Each position's logits from its embedding, its position and the mean of all: no attention."""

    vocab_size: int
    seq_len: int = 32
    width: int = 32

    @nn.compact
    def __call__(self, tokens, sigma=None, train=False):
        h = nn.Embed(self.vocab_size, self.width)(tokens) + nn.Embed(self.seq_len, self.width)(
            jnp.arange(tokens.shape[1]))[None]
        h = nn.gelu(nn.Dense(self.width)(jnp.concatenate([h, jnp.broadcast_to(h.mean(1, keepdims=True), h.shape)], -1)))
        return nn.Dense(self.vocab_size)(h).astype(jnp.float32)


@models.register_model("plugin_mean_mixer")
def build_mixer(cfg, *, vocab_size, causal):
    return MeanMixer(vocab_size, cfg.data.seq_len)


@evals.register_evaluator("plugin_masked_accuracy")
class MaskedAccuracy(evals.Evaluator):
    """Writes ``workdir/plugin_eval.jsonl``: per call the step and the bound evaluator's style of scalar."""

    def run(self, state, step, *, stop=None, writer=None):
        path = epath.Path(self.workdir) / "plugin_eval.jsonl"
        with path.open("a") as f:
            f.write(json.dumps(dict(step=step)) + "\n")
        return {f"eval/{self.name}/step": float(step)}
