"""Generation from a trained state: MDLM's samplers or the AR baseline, decoded, timed, written."""

from __future__ import annotations

import html
import json
import logging
import re
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from mdlm_jax.data.tokenizers import first_document, model_vocab
from mdlm_jax.diffusion import sampling


# A step report comes at least this many seconds after the block's start and the previous report:
# a sampling of a few seconds stays quiet, a long one logs about once per 10% of its masks.
PROGRESS_SECONDS = 5.0


class Samples(NamedTuple):
    tokens: np.ndarray       # (N, total length) int32
    # (N, total length) int32: the 1-based step that unmasked each token (the sampler's, see
    # sampling.SampleOutput), numbered on across semi-AR blocks; 0 for given tokens
    reveal_step: np.ndarray
    nfe: int
    seconds: float           # wall time of sampling, compilation excluded
    compile_seconds: float   # 0 when this setup had compiled the sampler before


def _given_tokens(s) -> tuple[list[int], list[int]]:
    """(the fixed first tokens, the fixed last tokens) of every sample. A prefix starts with the BOS
    that every training block of the 'wrap' and 'pad' packings starts with; the AR baseline always
    starts from BOS."""
    c, tok = s.cfg.sample, s.tokenizer
    bos = [tok.bos_id] if s.cfg.data.packing in ("wrap", "pad") else []
    prefix = tok.encode(c.prefix) if c.prefix else []
    first = bos + prefix if prefix else []
    if s.task.objective.starts_with_bos and not first:
        first = [tok.bos_id]
    return first, tok.encode(c.suffix) if c.suffix else []


def _template(s, num_samples: int):
    """x_init (N, L): the given first tokens, masks, the given last tokens."""
    length, mask = s.cfg.data.seq_len, s.task.mask_id
    first, last = _given_tokens(s)
    if len(first) + len(last) >= length:
        raise ValueError(f"sample.prefix and sample.suffix take {len(first) + len(last)} tokens (with BOS); the "
                         f"model length is {length}: leave room to generate.")
    row = first + [mask] * (length - len(first) - len(last)) + last
    return jnp.tile(jnp.asarray(row, jnp.int32)[None], (num_samples, 1))


class _Progress:
    """The host side of the step reports. ``step`` runs once per denoiser call (a host callback
    from inside the compiled sampler) with the number of masks in its input; it logs (process 0)
    each time another 10% of the block's masks are filled, at most once per ``PROGRESS_SECONDS``."""

    def __init__(self):
        self.begin("sampling")

    def begin(self, label: str):
        """A block starts: its first denoiser call sees all of its masks."""
        self.label, self.masks, self.calls, self.next_percent = label, None, 0, 10
        self.start = self.last = time.perf_counter()

    def step(self, masked):
        self.calls += 1
        masked = int(masked)
        if self.masks is None:
            self.masks = max(masked, 1)
        percent = 100 * (1 - masked / self.masks)
        now = time.perf_counter()
        if percent >= self.next_percent and now - self.last >= PROGRESS_SECONDS:
            if jax.process_index() == 0:
                logging.info("%s: %d%% of the masks filled, %d NFEs, %.1f s", self.label, percent, self.calls,
                             now - self.start)
            self.last, self.next_percent = now, 10 * (int(percent) // 10 + 1)


class _ReportingModel:
    """``model`` whose every forward first hands the number of masks in its input to ``report``
    through a host callback: a compiled block sampler shows its progress while the samplers stay
    free of logging. The callback returns nothing, so no sampled token changes."""

    def __init__(self, model, mask_id: int, report: Callable):
        self._model, self._mask_id, self._report = model, mask_id, report

    def __getattr__(self, name):
        return getattr(self._model, name)

    def apply(self, variables, x, *args, **kwargs):
        jax.debug.callback(self._report, jnp.sum(x == self._mask_id))
        return self._model.apply(variables, x, *args, **kwargs)


def _compiled_sampler(s, params, key, x_init):
    """The block sampler compiled once per setup and input shape, with the ``_Progress`` its
    callbacks report to: (executable, progress, compile seconds: 0 if cached)."""
    cache_key = tuple(x_init.shape)
    if cache_key in s.samplers:
        return *s.samplers[cache_key], 0.0
    start = time.perf_counter()
    progress = _Progress()
    model = _ReportingModel(s.task.model, s.task.mask_id, progress.step)
    with jax.set_mesh(s.mesh):
        block = s.task.objective.block_sampler(model, len(_given_tokens(s)[0]))
        s.samplers[cache_key] = jax.jit(block).lower(params, key, x_init).compile(), progress
    return *s.samplers[cache_key], time.perf_counter() - start


def generate(s, params) -> Samples:
    """Draws ``sample.num_samples`` sequences with the configured sampler (see configs' ``sample``),
    logging progress on process 0: within a block (``_Progress``) and after each semi-AR block."""
    c, task = s.cfg.sample, s.task
    key = jax.random.key(c.seed)
    x_init = _template(s, c.num_samples)
    block, progress, compile_seconds = _compiled_sampler(s, params, jax.random.fold_in(key, 0), x_init)
    blocks = c.num_strides + 1
    start = time.perf_counter()

    def block_done(i, out):
        nfe = int(out.nfe)  # waits for block i, so all its step reports come before the next begin
        if jax.process_index() == 0:
            logging.info("semi-AR block %d/%d done: %d/%d tokens, %d NFEs so far, %.1f s", i + 1, blocks,
                         out.tokens.shape[1], x_init.shape[1] + c.num_strides * c.stride, nfe,
                         time.perf_counter() - start)
        if i + 1 < blocks:
            progress.begin(f"semi-AR block {i + 2}/{blocks}")

    with jax.set_mesh(s.mesh):
        if c.num_strides:
            progress.begin(f"semi-AR block 1/{blocks}")
            out = sampling.semi_autoregressive(lambda k, x: block(params, k, x), key, x_init, stride=c.stride,
                                               num_strides=c.num_strides, mask_id=task.mask_id, on_block=block_done)
        else:
            progress.begin("sampling")
            out = block(params, key, x_init)
        out = jax.device_get(out)
    return Samples(np.asarray(out.tokens), np.asarray(out.reveal_step), int(out.nfe), time.perf_counter() - start,
                   compile_seconds)


def print_samples(s, state) -> list[str]:
    """Generates with the EMA params and logs the texts (process 0); returns them."""
    out = generate(s, state.ema_params)
    texts = [s.tokenizer.decode(row.tolist()) for row in out.tokens]
    if jax.process_index() == 0:
        logging.info("%d samples (%s, %d NFEs, %.1f s; compiled in %.1f s):", len(texts), _describe(s), out.nfe,
                     out.seconds, out.compile_seconds)
        for i, text in enumerate(texts):
            logging.info("--- sample %d ---\n%s", i, text)
    return texts


def write_samples(s, state, path) -> Samples:
    """Writes JSONL (text, token ids, NFEs, wall seconds, seed, sampler) and, if
    ``sample.trajectory_html``, a page showing when each token was unmasked."""
    c = s.cfg.sample
    out = generate(s, state.ema_params)
    if jax.process_index() == 0:
        path = epath.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(sample_record(s, row.tolist(), out)) + "\n" for row in out.tokens))
        logging.info("Wrote %d samples to %s (%s, %d NFEs, %.1f s; compiled in %.1f s)", len(out.tokens), path,
                     _describe(s), out.nfe, out.seconds, out.compile_seconds)
        if c.trajectory_html:
            page = path.with_suffix(".html")
            page.write_text(trajectory_html(s.tokenizer, out, title=_describe(s)), encoding="utf-8")
            logging.info("Wrote the denoising trajectory to %s", page)
    return out


def new_sample_path(workdir, step: int, s) -> epath.Path:
    """``workdir/samples/step_N_<sampler>_seed<k>.jsonl``, with ``-2``, ``-3`` ... added when that
    file exists: a sampler run never overwrites another's samples (or leaves a stale page)."""
    label = re.sub(r"[^A-Za-z0-9.=]+", "_", f"{_describe(s)} seed{s.cfg.sample.seed}").strip("_")
    base = epath.Path(workdir) / "samples" / f"{f'step_{step}' if step is not None else 'pretrained'}_{label}"
    path, n = base.with_suffix(".jsonl"), 1
    while path.exists() or path.with_suffix(".html").exists():
        n += 1
        path = epath.Path(f"{base}-{n}.jsonl")
    return path


def sample_record(s, ids: list[int], out: Samples) -> dict:
    """One JSONL line: the whole sample (``text``, ``token_ids``) and its first document
    (``document``, ``ended``: whether an EOS closed it), which generative perplexity scores."""
    document, ended = first_document(ids, s.tokenizer)
    return dict(text=s.tokenizer.decode(ids), token_ids=ids, tokenizer=s.tokenizer.name,
                document=s.tokenizer.decode(document), ended=ended, nfe=out.nfe, seconds=out.seconds,
                compile_seconds=out.compile_seconds, seed=s.cfg.sample.seed, sampler=_describe(s))


def _describe(s) -> str:
    return s.task.objective.describe_sampler()


def _token_html(tokenizer, token: int, position: int) -> tuple[str, bool]:
    """(a token's text for the page, whether it is a label). BOS, EOS, pad and mask show as labels
    (an id shared by BOS and EOS, as GPT-2's, is BOS only at position 0) and so does any other id
    without text; a newline shows a mark and breaks the line."""
    named = ([("bos", tokenizer.bos_id)] if position == 0 else []) + [
        ("eos", tokenizer.eos_id), ("pad", tokenizer.pad_id), ("bos", tokenizer.bos_id),
        ("mask", model_vocab(tokenizer)[1])]
    name = next((n for n, i in named if i == token), None)
    if name is None and (text := tokenizer.decode([token])):
        return html.escape(text).replace("\n", "&#8629;\n"), False
    return f"&#10216;{name or f'id {token}'}&#10217;", True


def trajectory_html(tokenizer, out: Samples, *, title: str) -> str:
    """A self-contained page: each token shaded by the step it was unmasked (dark = early; given
    tokens outlined); hovering shows the step. Text wraps at spaces and breaks at newlines."""
    rows = []
    for tokens, steps in zip(out.tokens, out.reveal_step):
        last = max(int(steps.max()), 1)
        cells = []
        for position, (tok, step) in enumerate(zip(tokens.tolist(), steps.tolist())):
            text, label = _token_html(tokenizer, tok, position)
            if step == 0:
                style = "outline:1px solid #555"
            else:
                style = f"background:hsl(210,80%,{int(35 + 55 * step / last)}%)"
            kind = ' class="label"' if label else ""
            cells.append(f'<span title="step {step}"{kind} style="{style}">{text}</span>')
        rows.append("<p>" + "".join(cells) + "</p>")
    return ("<!doctype html><meta charset='utf-8'><title>MDLM trajectory</title>"
            "<style>body{font:14px monospace;max-width:70em;margin:2em auto}"
            "p{line-height:1.8;white-space:pre-wrap}.label{font-size:80%;font-style:italic}</style>"
            f"<h1>{html.escape(title)}</h1><p>Dark blue tokens were unmasked first, light ones last; outlined "
            "tokens were given. Hover a token for its step (numbered on across semi-AR blocks).</p>"
            + "".join(rows))
