"""Evaluators of generated text: ``samples`` (written to the workdir and TensorBoard, with their
unigram entropy) and ``gen_ppl`` (generative perplexity under an evaluator LM, SPEC section 8)."""

from __future__ import annotations

import html
import logging

import jax
from etils import epath

from mdlm_jax.data.tokenizers import gpt2_tokenizer
from mdlm_jax.evals import gen_ppl, registry, sample
from mdlm_jax.models.gpt2 import load_hf_gpt2


def _entropy(tokens, tokenizer) -> float:
    """Mean unigram entropy (nats) of each sample's first document (and its EOS), as gen_ppl counts it."""
    return gen_ppl.mean_unigram_entropy([gen_ppl.counted_tokens(row.tolist(), tokenizer) for row in tokens])


@registry.register_evaluator("samples")
class Samples(registry.Evaluator):
    """``sample.num_samples`` samples with the configured sampler and the EMA params, written to
    ``workdir/samples/step_N_<sampler>_seed<k>.jsonl`` and to TensorBoard as text;
    ``eval/<name>/entropy`` is their mean unigram entropy (low: repetitive text)."""

    def run(self, state, step, *, stop=None, writer=None):
        exp = self.exp
        path = sample.new_sample_path(self.workdir, step, exp) if self.workdir else None
        out = sample.write_samples(exp, state, path) if path else sample.generate(exp, state.ema_params)
        if writer is not None:
            texts = [exp.tokenizer.decode(row.tolist()) for row in out.tokens]
            writer.write_text(f"samples/{self.name}", "\n\n".join(
                f"**sample {i}** ({out.nfe} NFEs)\n\n    " + html.escape(t).replace("\n", "\n    ")
                for i, t in enumerate(texts)), step)
        return {f"eval/{self.name}/entropy": _entropy(out.tokens, exp.tokenizer),
                f"eval/{self.name}/nfe": float(out.nfe), f"eval/{self.name}/seconds": out.seconds}


@registry.register_evaluator("gen_ppl")
class GenerativePerplexity(registry.Evaluator):
    """Generates ``sample.num_samples`` samples and scores them under the Hugging Face GPT-2 in
    ``evals.<name>.evaluator`` (a local directory with its weights and tokenizer), each sample
    cut after its first document as ``gen_ppl`` does: ``eval/<name>/gen_ppl`` and ``entropy``.
    The evaluator is loaded when the run starts, so a wrong path fails before the first step."""

    def __init__(self, name, entry, exp, workdir):
        super().__init__(name, entry, exp, workdir)
        path = entry.get("evaluator", "")
        if not path or not epath.Path(path).is_dir():
            raise FileNotFoundError(f"evals.{name}.evaluator must name a local Hugging Face GPT-2 directory "
                                    f"(config.json, model.safetensors, tokenizer files); got {path!r}. Set "
                                    f"--config.evals.{name}.evaluator=DIR or --config.evals.{name}.every=0.")
        self.model, self.params = load_hf_gpt2(path)
        self.tokenizer = gpt2_tokenizer(str(path))

    def run(self, state, step, *, stop=None, writer=None):
        exp = self.exp
        out = sample.generate(exp, state.ema_params)
        records = [sample.sample_record(exp, row.tolist(), out) for row in out.tokens]
        ids, _ = gen_ppl.record_samples(records, self.tokenizer)
        result = gen_ppl.generative_perplexity(self.model, self.params, ids, eos_id=self.tokenizer.eos_id,
                                               context=int(self.entry.get("context", 1024)),
                                               batch_size=int(self.entry.get("batch_size", 8)))
        if jax.process_index() == 0:
            logging.info("gen PPL at step %d: %.2f (entropy %.3f, %d tokens)", step, result.ppl, result.entropy,
                         result.num_tokens)
        return {f"eval/{self.name}/gen_ppl": result.ppl, f"eval/{self.name}/entropy": result.entropy}
