"""The experiment config schema: every field any code reads, with its default and meaning.

Files in ``configs/`` start from ``default_config()`` and change what their experiment needs.
"""

from __future__ import annotations

import ml_collections

# Model sizes of SPEC section 6 (blocks, hidden, heads); cond_dim 128 throughout.
MODEL_SIZES = {
    "tiny": dict(n_blocks=8, hidden_size=512, n_heads=8),
    "small": dict(n_blocks=12, hidden_size=768, n_heads=12),
    "medium": dict(n_blocks=24, hidden_size=1024, n_heads=16),
}


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # model init, diffusion noise and data order all derive from it

    c.model = ml_collections.ConfigDict(dict(
        name="dit",            # the backbone (mdlm_jax.models.MODELS)
        n_blocks=12,           # 'small' (the paper's model); see MODEL_SIZES / set_model_size
        hidden_size=768,
        n_heads=12,
        cond_dim=128,
        mlp_ratio=4,
        dropout=0.1,           # on the two residual branches, training only
        time_conditioning=False,  # the paper's released setting: sigma is zeroed, adaLN stays
        dtype="bfloat16",      # compute dtype of matmuls; params/optimizer are always float32
        # '' lets jax choose (XLA on every platform as of jax 0.10); 'xla' or 'cudnn' (CUDA, bf16/fp16)
        # forces one; 'chunked' is a pure-JAX memory-efficient attention (O(L) memory, any platform);
        # 'auto' takes cuDNN flash attention on a CUDA GPU in bf16/fp16, else XLA
        attention_impl="",
        # what the backward pass recomputes per block: 'none'; 'block' (keep only block inputs, least
        # memory); 'dots_saveable' (keep the weight matmuls, recompute attention scores: long L)
        remat="none",
        # > 0: fuse the output layer with the cross-entropy over this many positions at a time, so
        # (B, L, V) float32 logits and their gradient never exist whole (1.6 GB each at B=8, L=1024
        # with GPT-2's vocabulary); 0 computes the full logits. Same numbers up to float rounding.
        loss_chunk=0,
        # with loss_chunk=0, for the objectives whose loss is the cross-entropy (subs, ar): compute it
        # on the output layer's padded logits with its gradient written out (softmax - onehot), one
        # pass instead of autodiff's scatter, copy and pad; False takes the model's (B, L, V) logits
        fused_loss=True,
        # run the blocks as one lax.scan over their stacked params: XLA compiles one block instead of
        # n_blocks (compile time); same parameters, same numbers (dropout masks differ, not their law)
        scan_blocks=False,
        # the embedding and output layer hold the vocabulary padded to a multiple of this, so a tensor
        # axis shards them (GPT-2's 50,258 rows -> 50,304); the zero pad rows never reach a logit, loss
        # or sample (mdlm_jax/models/vocab.py) and interop reads and writes the real rows. 1: no padding
        # (what checkpoints saved before this field hold)
        vocab_multiple=128,
        # model.name='bert': a Hugging Face BERT directory (config.json + model.safetensors or
        # pytorch_model.bin) whose architecture fills the model fields and whose weights initialise
        # training (when the workdir has no checkpoint) or are evaluated and sampled as they are
        pretrained="",
        # BERT only (its hidden_size, n_blocks, n_heads and dropout are the fields above)
        bert=ml_collections.ConfigDict(dict(
            intermediate_size=0,  # 0 = mlp_ratio x hidden_size
            max_position_embeddings=512,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
        )),
    ))

    c.diffusion = ml_collections.ConfigDict(dict(
        # the objective (mdlm_jax.objectives): 'subs' (MDLM), 'ar' (causal baseline), 'd3pm' (absorbing
        # D3PM, discrete time: set num_steps), 'sedd' (score entropy; needs model.time_conditioning)
        parameterization="subs",
        subs_masking=False,    # d3pm only: -inf on the mask logit (zero masking) without carry-over (Table 8)
        # d3pm only: the official training.importance_sampling / change_of_variables (BASELINES.md)
        importance_sampling=False,
        change_of_variables=False,
        schedule="loglinear",
        schedule_params=ml_collections.ConfigDict({"eps": 1e-3}),
        time_sampler="antithetic",  # 'uniform' | 'antithetic' (global batch) | 'sobol'
        sampling_eps=1e-3,
        num_steps=0,           # T: 0 = continuous-time NELBO, else discrete time with T steps
    ))

    c.data = ml_collections.ConfigDict(dict(
        # any entry of mdlm_jax.data.DATASETS (register_dataset adds one): 'embedded' (pydoc_data.topics,
        # no download), 'files', the paper datasets 'lm1b', 'owt', 'text8', and the zero-shot sets 'ptb',
        # 'wikitext2', 'wikitext103', 'lambada', 'ag_news', 'pubmed', 'arxiv'
        source="embedded",
        # source == 'files': .txt / .jsonl (optionally .gz) files, globs or directories; on the command
        # line a comma-separated list (--config.data.files=a.txt,notes/,more/*.jsonl.gz)
        files=(),
        # .txt documents: 'blank_lines' (runs of lines between blank lines), 'file' (one per file), or
        # any other string: a line holding just it separates documents (e.g. '<|endoftext|>')
        txt_split="blank_lines",
        jsonl_field="text",    # the text field of .jsonl records ('files', and OpenWebText as .jsonl)
        # 'files': invalid UTF-8 is 'warn' (replaced by U+FFFD, the bytes counted and reported) or 'error'
        invalid_utf8="warn",
        path="",               # a paper dataset's local copy in its public layout; '' = tfds, then the HF caches
        # TensorFlow Datasets dir tried next: an ArrayRecord copy (`tfds build lm1b --file_format=array_record`,
        # read without TensorFlow); '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
        tfds_data_dir="",
        tokenizer="bytes",     # 'bytes' | 'text8' | 'gpt2' | 'bert-base-uncased'
        tokenizer_path="",     # gpt2 / bert: directory of the vocabulary files; '' = the local HF cache
        allow_download=False,  # fetch a missing tokenizer (HF Hub), text8.zip or LAMBADA; never otherwise
        seq_len=128,
        packing="wrap",        # 'wrap' (BOS + piece + EOS blocks), 'pad' (one document per row) or 'chunk' (text8)
        detokenizer="",        # '' = the dataset's official one; or 'none', 'wikitext', 'ptb', 'lm1b', ...
        eval_split="",         # '' = the paper's (test: lm1b, text8, ag_news, lambada; else validation)
        owt_val_documents=100_000,  # owt: the last N documents are the validation split
        val_fraction=0.05,     # 'embedded' / 'files': the last fraction of documents validates
        cache_dir="",          # '' = ~/.cache/mdlm_jax; `python -m mdlm_jax.data prepare --out` writes here
    ))

    c.optim = ml_collections.ConfigDict(dict(
        lr=3e-4, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
        warmup_steps=2500,
        schedule="constant",   # 'constant' after warmup (paper) or 'cosine'
        decay_steps=1_000_000,  # cosine only: total steps of warmup + decay
        end_lr_factor=0.0,     # cosine only: final lr as a fraction of lr
        grad_clip=1.0,         # global-norm clipping; 0 disables
    ))

    c.train = ml_collections.ConfigDict(dict(
        batch_size=512,        # global batch, over all processes and devices
        microbatches=1,        # gradient accumulation: batch_size / microbatches rows per pass
        steps=1_000_000,
        ema=0.9999,            # official warmup rule min(ema, (1 + n) / (10 + n)); 0 disables
        log_every=100,
        eval_every=10_000,     # the period of the evaluators in `evals` that set none; 0: never
        checkpoint_every=5_000,
        keep_checkpoints=3,    # keep the last N
        keep_period=0,         # and every step divisible by this forever (0: none)
        async_checkpoints=True,
        init_checkpoint="",    # fine-tune from these params when the workdir has no checkpoint
        preemption_check_every=10,  # multi-host: how often hosts agree on a SIGTERM
        sample_at_end=False,   # log sample.num_samples samples when training finishes
        peak_tflops=0.0,       # per device, for the logged MFU; 0 = training/flops.py's table (n/a if unlisted)
    ))

    c.eval = ml_collections.ConfigDict(dict(
        batch_size=64,
        max_batches=-1,        # -1: the whole split
        num_t=1,               # time samples per sequence, averaged (1 = the paper; more = lower variance)
        use_ema=True,
        seed=42,               # fixed so that bounds are comparable across checkpoints
        # --mode=zero_shot (Table 3): these sets, each wrapped to data.seq_len with the model's tokenizer,
        # its official detokenizer and the paper's split (WikiText-2 and -103 share one validation set)
        zero_shot_sets=("ptb", "wikitext2", "lm1b", "lambada", "ag_news", "pubmed", "arxiv"),
        zero_shot_paths="",    # 'ptb=/data/ptb,lambada=/data/lambada_test.jsonl': a set's data.path ('' = HF caches)
    ))

    # Evaluators during training (mdlm_jax/evals): each entry runs every `every` steps and at the last
    # step (unset: train.eval_every; 0: off) and logs eval/... scalars; its `type` defaults to its name.
    # A config adds one with c.evals.NAME = dict(type="bound", every=N, ...).
    c.evals = ml_collections.ConfigDict(dict(
        bound=dict(every=ml_collections.config_dict.placeholder(int)),  # validation NELBO: eval/nelbo, eval/ppl
        samples=dict(every=0),  # `sample` settings -> workdir/samples/*.jsonl and TensorBoard text, with entropy
        gen_ppl=dict(every=0, evaluator="", context=1024, batch_size=8),  # evaluator: a local HF GPT-2 dir
        zero_shot=dict(every=0),  # eval.zero_shot_sets, as --mode=zero_shot
    ))

    c.sample = ml_collections.ConfigDict(dict(
        num_samples=4,
        predictor="ddpm_cache",  # 'ddpm' | 'ddpm_cache' | 'first_hitting' (exact, <= L calls)
        num_steps=128,         # T of the time grid (ddpm / ddpm_cache)
        temperature=1.0,
        top_p=1.0,             # nucleus sampling when < 1
        # categorical noise: 'exact' (float64 with x64, else an untruncated float32 draw); 'float32'
        # reproduces the official Gumbel noise and its low-entropy bias (for comparison only)
        noise="exact",
        prefix="",             # text kept fixed at the start (prefix conditioning)
        suffix="",             # text kept fixed at the end (with prefix: infilling)
        num_strides=0,         # semi-autoregressive: this many extra strides of `stride` tokens
        stride=64,
        trajectory_html=False,  # --mode=sample also writes a page showing when each token unmasked
        seed=0,
    ))

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    c.distributed = ml_collections.ConfigDict(dict(
        enabled="auto",        # 'auto': on when a cluster environment or coordinator_address is set
        coordinator_address="",
        num_processes=1,
        process_id=0,
        local_device_ids="",   # comma-separated; '' = all local devices
        initialization_timeout=300,
        heartbeat_timeout_seconds=100,
    ))
    return c


def get_config(arg=None) -> ml_collections.ConfigDict:
    """The defaults as a config file: what ``--config`` loads when only a workdir is given."""
    return apply_arg(default_config(), arg)


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
# Dicts taken whole: their keys depend on another field (schedule_params) or on the config file (evals).
OPEN_FIELDS = ("diffusion.schedule_params", "evals")


def flatten(cfg) -> dict:
    """{'a.b': value} of every leaf of a config (or its dict); fields of ``OPEN_FIELDS`` are one leaf
    (a dict), lists become tuples (a config saved as JSON has lists where the schema has tuples)."""
    out = {}

    def walk(prefix, node):
        for k, v in node.items():
            path = f"{prefix}{k}"
            if isinstance(v, (dict, ml_collections.ConfigDict)) and path not in OPEN_FIELDS:
                walk(path + ".", v)
            elif isinstance(v, (dict, ml_collections.ConfigDict)):
                out[path] = dict(v)
            else:
                out[path] = tuple(v) if isinstance(v, list) else v

    walk("", cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else cfg)
    return out


def set_field(cfg, path: str, value) -> None:
    """Sets ``cfg``'s field at dotted ``path`` (an ``OPEN_FIELDS`` dict replaces the whole entry)."""
    *parents, leaf = path.split(".")
    node = cfg
    for name in parents:
        node = node[name]
    if path in OPEN_FIELDS:
        with node.unlocked():
            node[leaf] = ml_collections.ConfigDict(dict(value))
        return
    if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # JSON writes 1.0 as 1
    node[leaf] = value


# Fields added after checkpoints existed whose default would misread those checkpoints: a saved
# config without the field takes this value (what the code did before the field), not the default.
LEGACY_VALUES = {"model.vocab_multiple": 1}


def legacy_fields(saved: dict) -> list[str]:
    """The ``LEGACY_VALUES`` fields a saved config lacks (so ``from_saved`` gave them their legacy value)."""
    have = flatten(saved)
    return [path for path in LEGACY_VALUES if path not in have]


def from_saved(saved: dict) -> tuple[ml_collections.ConfigDict, list[str]]:
    """A config saved with a checkpoint (``cfg.to_dict()`` through JSON) over today's defaults:
    fields added since take their defaults (``LEGACY_VALUES``' their legacy value). Returns
    (config, saved fields this version does not know, which are dropped)."""
    cfg = default_config()
    known = flatten(cfg)
    unknown = []
    for path in legacy_fields(saved):
        set_field(cfg, path, LEGACY_VALUES[path])
    for path, value in flatten(saved).items():
        if path not in known:
            unknown.append(path)
        else:
            set_field(cfg, path, value)
    return cfg, unknown


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def validate(cfg, mode: str = "train") -> None:
    """Start-up checks of the values no later stage can recover from, each a ValueError naming the
    field and the fix; run before any compile. ``mode``: 'train', 'eval', 'zero_shot' or 'sample'
    (the sampler settings are checked where they will be used: sample mode, or
    ``train.sample_at_end``, or an evaluator that generates)."""
    from mdlm_jax import models, objectives  # pylint: disable=import-outside-toplevel
    from mdlm_jax.diffusion import process, schedules  # pylint: disable=import-outside-toplevel
    from mdlm_jax.evals import registry  # pylint: disable=import-outside-toplevel

    t, o, e, m, d = cfg.train, cfg.optim, cfg.eval, cfg.model, cfg.diffusion
    _check(t.steps >= 1, f"train.steps must be >= 1 (got {t.steps}): the number of optimizer steps to train to.")
    for name in ("log_every", "eval_every", "checkpoint_every"):
        _check(t[name] >= 0, f"train.{name} must be >= 0 (0 turns it off), got {t[name]}.")
    _check(t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}.")
    for name, value in (("train.batch_size", t.batch_size), ("train.microbatches", t.microbatches),
                        ("eval.batch_size", e.batch_size), ("eval.num_t", e.num_t),
                        ("sample.num_samples", cfg.sample.num_samples), ("data.seq_len", cfg.data.seq_len)):
        _check(value >= 1, f"{name} must be >= 1, got {value}.")
    _check(o.lr >= 0, f"optim.lr must be >= 0, got {o.lr}.")
    _check(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}.")
    _check(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 disables clipping), got {o.grad_clip}.")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}.")
    _check(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, f"optim.beta1 and beta2 must lie in [0, 1), got {o.beta1}, "
           f"{o.beta2}.")
    _check(o.eps > 0, f"optim.eps must be > 0, got {o.eps}.")
    _check(o.schedule in ("constant", "cosine"), f"Unknown optim.schedule {o.schedule!r}; choose 'constant' or "
           "'cosine'.")
    _check(0 <= t.ema < 1, f"train.ema must lie in [0, 1) (0 disables the EMA), got {t.ema}.")
    _check(m.dtype in COMPUTE_DTYPES, f"model.dtype {m.dtype!r} is not a compute dtype; choose one of "
           f"{list(COMPUTE_DTYPES)}.")
    _check(m.name in models.MODELS, f"Unknown model.name {m.name!r}; choose one of {sorted(models.MODELS)}.")
    _check(isinstance(m.vocab_multiple, int) and m.vocab_multiple >= 1, f"model.vocab_multiple must be an integer "
           f">= 1 (1: no padding; 128 divides every tensor axis up to 128), got {m.vocab_multiple!r}.")
    _check(d.parameterization in objectives.OBJECTIVES, f"Unknown diffusion.parameterization "
           f"{d.parameterization!r}; choose one of {sorted(objectives.OBJECTIVES)}.")
    _check(d.schedule in schedules.SCHEDULES, f"Unknown diffusion.schedule {d.schedule!r}; choose one of "
           f"{sorted(schedules.SCHEDULES)}.")
    _check(d.time_sampler in process.TIME_SAMPLERS, f"Unknown diffusion.time_sampler {d.time_sampler!r}; "
           f"choose one of {list(process.TIME_SAMPLERS)}.")
    _check(d.num_steps >= 0, f"diffusion.num_steps must be >= 0 (0 = continuous time), got {d.num_steps}.")
    for name in ("importance_sampling", "change_of_variables"):
        supported = d.parameterization == "d3pm" or (d.parameterization == "subs" and not d.num_steps)
        _check(not d.get(name, False) or supported, f"diffusion.{name} is supported for 'd3pm' and for 'subs' in "
               f"continuous time (the official code refuses it for sedd), not diffusion.parameterization "
               f"{d.parameterization!r} with diffusion.num_steps {d.num_steps}: unset it.")
    _check(not d.get("subs_masking", False) or d.parameterization == "d3pm", "diffusion.subs_masking is the d3pm "
           f"ablation of zero masking; diffusion.parameterization {d.parameterization!r} has its own rule: unset it.")
    _check(0 <= d.sampling_eps < 1, f"diffusion.sampling_eps must lie in [0, 1), got {d.sampling_eps}.")
    registry.check(cfg)
    generates = any(registry.entry_type(n, e) in ("samples", "gen_ppl") for n, e in registry.enabled(cfg).items())
    if mode == "sample" or (mode == "train" and (t.sample_at_end or generates)):
        _validate_sampler(cfg, objectives.OBJECTIVES[d.parameterization])


def _validate_sampler(cfg, objective) -> None:
    from mdlm_jax.diffusion import sampling  # pylint: disable=import-outside-toplevel

    c = cfg.sample
    where = "sample" if not cfg.train.sample_at_end else "sample (train.sample_at_end)"
    _check(objective.predictors or c.predictor != "analytic", f"sample.predictor 'analytic' is SEDD's sampler for "
           f"the diffusion objectives ('subs', 'sedd'); diffusion.parameterization {objective.name!r} samples "
           "left to right: unset it.")
    _check(not objective.predictors or c.predictor in objective.predictors,
           f"Unknown {where}.predictor {c.predictor!r} for diffusion.parameterization {objective.name!r}; choose "
           f"one of {list(objective.predictors)}.")
    _check(c.temperature > 0, f"sample.temperature must be > 0, got {c.temperature}.")
    _check((c.temperature == 1 and c.top_p == 1) or (c.predictor != "analytic" and objective.name != "d3pm"),
           "sample.temperature and sample.top_p reshape SUBS probabilities; the analytic and d3pm samplers take "
           "neither: leave them at 1.")
    _check(0 < c.top_p <= 1, f"sample.top_p must lie in (0, 1], got {c.top_p}.")
    _check(c.noise in sampling.NOISES, f"Unknown sample.noise {c.noise!r}; choose one of {list(sampling.NOISES)}.")
    _check(c.num_steps >= 1, f"sample.num_steps must be >= 1, got {c.num_steps}.")
    _check(c.num_strides >= 0, f"sample.num_strides must be >= 0, got {c.num_strides}.")
    if c.num_strides:
        _check(1 <= c.stride <= cfg.data.seq_len, f"sample.stride must lie in [1, data.seq_len = "
               f"{cfg.data.seq_len}], got {c.stride}.")
    if objective.causal:
        _check(not c.suffix and not c.num_strides, "A causal model samples left to right: sample.suffix "
               "(infilling) and sample.num_strides (semi-autoregressive strides) need a diffusion model; "
               "unset them.")
    elif c.predictor == "ddpm_cache" and cfg.diffusion.schedule != "loglinear":
        raise ValueError(f"sample.predictor 'ddpm_cache' assumes the loglinear schedule; the model uses "
                         f"{cfg.diffusion.schedule!r}: use sample.predictor 'ddpm' or 'first_hitting'.")


def set_model_size(cfg, size: str) -> None:
    """Sets n_blocks, hidden_size and n_heads to a named size of SPEC section 6."""
    if size not in MODEL_SIZES:
        raise ValueError(f"Unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}.")
    cfg.model.update(MODEL_SIZES[size])


def model_kwargs(cfg) -> dict:
    """DiT constructor arguments (except vocab_size) from a config; ``causal`` is what the objective needs."""
    from mdlm_jax.objectives import OBJECTIVES  # pylint: disable=import-outside-toplevel

    m = cfg.model
    objective = OBJECTIVES.get(cfg.diffusion.parameterization)
    return dict(n_blocks=m.n_blocks, hidden_size=m.hidden_size, n_heads=m.n_heads, cond_dim=m.cond_dim,
                mlp_ratio=m.mlp_ratio, dropout=m.dropout, time_conditioning=m.time_conditioning,
                remat=m.remat, scan_blocks=m.scan_blocks, vocab_multiple=m.vocab_multiple,
                causal=bool(objective and objective.causal))


def load_file(path: str, overrides: list[str]):
    """``--config=configs/X.py[:arg]`` with ``--config.a.b=v`` overrides, as ``main.py`` parses them, for
    the tools that take a config beside their own flags (interop, compare). ValueError names a bad
    field or file."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

    argv = ["mdlm_jax", f"--config={path}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    try:
        rest = values(argv)
        cfg = values.config
        cfg.to_dict()  # a config file that failed to load raises on first use
    except (AttributeError, KeyError) as e:
        raise ValueError(f"{' '.join(overrides)}: a field is not in the config ({e}).") from e
    except (flags.Error, OSError, TypeError, SyntaxError) as e:
        raise ValueError(f"--config {path}: {e}") from e
    if len(rest) > 1:
        raise ValueError(f"Unrecognized arguments: {rest[1:]}")
    return cfg


def sibling_config(this_file: str, name: str):
    """``get_config()`` of the config file ``name``.py beside ``this_file``: a config that differs
    from another experiment's in a few fields starts from it (configs/ is not a package)."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    import os  # pylint: disable=import-outside-toplevel

    path = os.path.join(os.path.dirname(os.path.abspath(this_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_mdlm_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def apply_arg(cfg, arg: str | None):
    """``--config=configs/X.py:quick`` shrinks any experiment to a seconds-long CPU run on the embedded
    corpus (tiny model, a few steps); used by tests and smoke checks. No arg leaves cfg unchanged."""
    if not arg:
        return cfg
    if arg != "quick":
        raise ValueError(f"Unknown config argument {arg!r}; the only one is 'quick'.")
    cfg.model.update(n_blocks=2, hidden_size=64, n_heads=2, cond_dim=32, dtype="float32")
    cfg.data.update(source="embedded", files=(), tokenizer="bytes", seq_len=32, packing="wrap")
    cfg.train.update(batch_size=8, steps=2, log_every=1, eval_every=2, checkpoint_every=2, sample_at_end=False)
    cfg.optim.warmup_steps = 1
    cfg.eval.update(batch_size=8, max_batches=2)
    cfg.sample.update(num_samples=2, num_steps=4)
    return cfg
