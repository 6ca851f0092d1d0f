"""``python -m mdlm_jax.interop``: training checkpoints <-> the official MDLM file layouts.

    python -m mdlm_jax.interop export --workdir DIR [--step N] [--ema | --no-ema] \\
        --format lightning|state_dict|safetensors|hf|hf-bert --out OUT [--config configs/X.py] [--mask-id M] \\
        [--vocab-size V]
    python -m mdlm_jax.interop import --from PATH --config configs/X.py --workdir OUT \\
        [--ema | --no-ema] [--config.a.b=v ...]

``export`` reads one step of an orbax checkpoint written by training (default: the newest, EMA
weights) as host numpy arrays, without an accelerator, and writes:

* ``lightning``: an official-style Lightning ``.ckpt``: raw weights in ``state_dict``, the EMA in
  ``ema.shadow_params`` (with ``--no-ema`` the raw weights fill both);
* ``state_dict``: ``torch.save({name: tensor})`` with the official bare names (``.pt``);
* ``safetensors``: one safetensors file with bare names (OUT, or OUT/model.safetensors when OUT
  does not end in ``.safetensors``);
* ``hf``: OUT/model.safetensors + OUT/config.json as in the ``kuleshov-group/mdlm-owt`` release, with
  the remote code that ``transformers.AutoModelForMaskedLM.from_pretrained(OUT, trust_remote_code=True)``
  loads;
* ``hf-bert`` (``model.name='bert'``): OUT/config.json + OUT/model.safetensors as a Hugging Face
  ``BertForMaskedLM`` (no remote code), which ``transformers`` and its ``run_glue.py`` load, as
  does ``python -m mdlm_jax.glue --init OUT``.

The model architecture comes from the config saved in the checkpoint (``--config`` replaces it)
and the vocabulary size from the embedding, or, where ``model.vocab_multiple`` padded it, from the
tokenizer (``--vocab-size`` instead); the files hold only the real rows. ``import`` reads any of
these files (or the official release) and writes step 0 of a workdir, params and EMA both set to
the imported weights and a fresh optimizer state, which ``python -m mdlm_jax.main
--mode=eval|sample|train`` accepts, as does ``--config.train.init_checkpoint=OUT`` for
fine-tuning in another workdir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from mdlm_jax import checkpoint, config as config_lib, data, experiment, models, objectives
from mdlm_jax.experiment import Experiment
from mdlm_jax.interop import formats, hf_bert, mappings
from mdlm_jax.models import vocab as vocab_models
from mdlm_jax.training import task as task_lib

FORMATS = ("lightning", "state_dict", "safetensors", "hf", "hf-bert")


# ------------------------------------------------------------------------------------------- export


def _check_out(out: str, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; choose one of {list(FORMATS)}.")
    if fmt in ("lightning", "state_dict") and not out.endswith(formats.TORCH_SUFFIXES):
        raise ValueError(f"--out for {fmt} must end in one of {formats.TORCH_SUFFIXES} (so that it can be "
                         f"read back); got {out!r}.")
    if fmt in ("hf", "hf-bert") and os.path.isfile(out):
        raise ValueError(f"--out for {fmt} is a directory; {out!r} is a file.")


def _model_from_config(cfg, vocab_size: int):
    """The backbone ``model.name`` builds for this vocabulary (causal as its objective needs)."""
    try:
        causal = objectives.OBJECTIVES[cfg.diffusion.parameterization].causal
        return models.get_model(cfg, vocab_size=vocab_size, causal=causal)
    except (AttributeError, KeyError) as e:
        raise ValueError(f"The config lacks a model field ({e}); pass --config.") from e


def _checkpoint_model(cfg, rows: int, where: str, vocab_size: int | None = None):
    """The backbone of a checkpoint whose vocabulary axis holds ``rows`` rows. Unpadded
    (``model.vocab_multiple`` 1, checkpoints saved before it) they are the vocabulary; padded, the
    real count is ``vocab_size`` or else the config's tokenizer's, which must pad to ``rows``."""
    multiple = int(cfg.model.get("vocab_multiple", 1))
    if multiple <= 1 and vocab_size is None:
        return _model_from_config(cfg, rows)
    if vocab_size is None:
        try:
            vocab_size, _ = data.model_vocab(data.tokenizer_for(cfg.data))
        except (OSError, ValueError, ImportError) as e:
            raise ValueError(f"{where} holds the vocabulary padded to {rows} rows (model.vocab_multiple={multiple}) "
                             f"and the export writes only the real ones, which the tokenizer {cfg.data.tokenizer!r} "
                             f"counts; it could not be loaded ({e}): pass --vocab-size (mask included).") from e
    if vocab_models.padded_size(vocab_size, multiple) != rows:
        raise ValueError(f"{where} has {rows} vocabulary rows, which is not {vocab_size} entries padded to a multiple "
                         f"of {multiple} (model.vocab_multiple): the checkpoint was trained with another tokenizer; "
                         "pass --vocab-size (mask included) or the --config it was trained with.")
    return _model_from_config(cfg, vocab_size)


def _hf_mask_id(cfg, vocab_size: int) -> int:
    """The mask id from the config's tokenizer (SPEC section 1), checked against the vocabulary."""
    try:
        tokenizer_vocab, mask_id = data.model_vocab(data.tokenizer_for(cfg.data))
    except (OSError, ValueError, ImportError) as e:
        raise ValueError(f"The hf format records the mask id, and the tokenizer {cfg.data.tokenizer!r} could not "
                         f"be loaded to find it ({e}); pass --mask-id.") from e
    if tokenizer_vocab != vocab_size:
        raise ValueError(f"The tokenizer {cfg.data.tokenizer!r} gives a vocabulary of {tokenizer_vocab} (mask id "
                         f"{mask_id}) but the checkpoint's embedding has {vocab_size} rows; pass --mask-id.")
    return mask_id


def _write_safetensors(out: str, sd: dict, *, step: int, weights: str) -> str:
    from safetensors.numpy import save_file

    path = out if out.endswith(".safetensors") else os.path.join(out, formats.HF_WEIGHTS)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file(sd, path, metadata={"format": "pt", "step": str(step), "weights": weights})
    return path


def export(workdir: str, out: str, *, fmt: str = "lightning", step: int | None = None, use_ema: bool = True,
           cfg=None, mask_id: int | None = None, vocab_size: int | None = None) -> dict:
    """Writes one step of the training checkpoint in ``workdir`` as ``fmt`` (see the module doc).

    ``cfg``: a config replacing the one saved in the checkpoint; ``mask_id``: for ``hf``, instead
    of the config's tokenizer; ``vocab_size``: the real rows of a padded vocabulary (mask
    included), instead of the tokenizer's count. Returns a summary (step, weights, paths, tensors,
    bytes, seconds).
    Raises FileNotFoundError (no workdir / step) or ValueError (unknown format, a checkpoint that
    does not match the config, no config anywhere).
    """
    start = time.perf_counter()
    _check_out(out, fmt)
    weights_key = "ema_params" if use_ema else "params"
    keys = ("params", "ema_params") if fmt == "lightning" and use_ema else (weights_key,)
    arrays, saved_config, step = checkpoint.restore_numpy(workdir, keys, step=step)
    if cfg is None:
        if saved_config is None:
            raise ValueError(f"Step {step} in {workdir} has no saved config; pass --config.")
        cfg, _ = config_lib.from_saved(saved_config)  # fields added since the save take their defaults
    if (fmt == "hf-bert") != (cfg.model.name == "bert"):
        raise ValueError(f"--format hf-bert is the format of model.name 'bert' (and only it); step {step} in "
                         f"{workdir} holds model.name {cfg.model.name!r}: choose "
                         f"{'hf-bert' if cfg.model.name == 'bert' else 'one of ' + ', '.join(FORMATS[:-1])}.")
    mapping = mappings.mapping_for(cfg.model.name)
    if fmt == "hf-bert":
        return _export_bert(arrays[weights_key], cfg, out, mapping, where=f"'{weights_key}' of step {step} in "
                            f"{workdir}", step=step, use_ema=use_ema, start=start, vocab_size=vocab_size)
    embedding = arrays[keys[0]].get("vocab_embed") if isinstance(arrays[keys[0]], dict) else None
    if embedding is None:
        raise ValueError(f"Step {step} in {workdir} holds no DiT parameters (no 'vocab_embed').")
    model = _checkpoint_model(cfg, int(embedding.shape[0]), f"Step {step} in {workdir}", vocab_size)
    sds = {}
    for key in keys:  # one tree converted (and freed) at a time
        tree = arrays.pop(key)
        mapping.check(tree, model, f"'{key}' of step {step} in {workdir}")
        sds[key] = mapping.to_torch(tree, model)
        del tree
    sd = sds[weights_key]
    written = [out]
    if fmt == "lightning":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        formats.save_lightning(out, sds["params"], model, ema_sd=sds.get("ema_params", sds["params"]), step=step)
    elif fmt == "state_dict":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        formats.save_state_dict(out, sd)
    elif fmt == "safetensors":
        written = [_write_safetensors(out, sd, step=step, weights="ema" if use_ema else "raw")]
    else:
        mask_id = _hf_mask_id(cfg, model.vocab_size) if mask_id is None else mask_id
        formats.save_hf(out, sd, model, vocab_size=model.vocab_size, mask_id=mask_id, length=cfg.data.seq_len)
        written = [os.path.join(out, name) for name in (formats.HF_WEIGHTS, formats.HF_CONFIG, *formats.HF_CODE)]
    return dict(format=fmt, step=step, weights="ema" if use_ema else "raw", paths=written, tensors=len(sd),
                bytes=sum(os.path.getsize(p) for p in written), seconds=time.perf_counter() - start)


# ------------------------------------------------------------------------------------------- import


def _export_bert(tree, cfg, out: str, mapping, *, where: str, step: int, use_ema: bool, start: float,
                 vocab_size: int | None) -> dict:
    embedding = tree.get("embeddings", {}).get("word_embeddings", {}).get("embedding")
    if embedding is None:
        raise ValueError(f"{where} holds no BERT parameters (no embeddings/word_embeddings).")
    model = _checkpoint_model(cfg, int(embedding.shape[0]), where, vocab_size)
    mapping.check(tree, model, where)
    hf_bert.save_hf_bert(out, model.config, vocab_models.unpad_params(tree, model))
    written = [os.path.join(out, name) for name in (hf_bert.SAFETENSORS, hf_bert.CONFIG)]
    # The tokenizer files too, so that transformers (and run_glue.py) load the directory alone.
    for directory in (cfg.data.tokenizer_path, cfg.model.get("pretrained", "")):
        found = [f for f in hf_bert.TOKENIZER_FILES if directory and os.path.isfile(os.path.join(directory, f))]
        if found:
            for name in found:
                shutil.copyfile(os.path.join(directory, name), os.path.join(out, name))
                written.append(os.path.join(out, name))
            break
    else:
        print(f"warning: no tokenizer files ({', '.join(hf_bert.TOKENIZER_FILES)}) in data.tokenizer_path or "
              f"model.pretrained; copy the model's vocab.txt into {out} for transformers' tokenizer.", file=sys.stderr)
    return dict(format="hf-bert", step=step, weights="ema" if use_ema else "raw", paths=written,
                tensors=len(models.bert.hf_names(model.config)), bytes=sum(os.path.getsize(p) for p in written),
                seconds=time.perf_counter() - start)


def _check_vocab(sd: dict, meta: dict, s: Experiment, source: str) -> None:
    """The file's vocabulary (and, for hf, mask id and architecture) against the config's."""
    vocab_size, mask_id, tokenizer = s.task.model.vocab_size, s.task.mask_id, s.cfg.data.tokenizer
    embedding = sd.get("vocab_embed.embedding")
    if embedding is not None and embedding.shape[0] != vocab_size:
        raise ValueError(f"{source}: the checkpoint's vocabulary has {embedding.shape[0]} entries (mask included) "
                         f"but the config's tokenizer {tokenizer!r} gives {vocab_size} (mask id {mask_id}): import "
                         "with the data.tokenizer the model was trained with.")
    hf = meta.get("hf_config")
    if not hf:
        return
    if "mask_token_id" in hf and int(hf["mask_token_id"]) != mask_id:
        raise ValueError(f"{source}: config.json has mask_token_id {hf['mask_token_id']} but the config's tokenizer "
                         f"{tokenizer!r} puts the mask at {mask_id}.")
    ours = config_lib.model_kwargs(s.cfg) | {"vocab_size": vocab_size}
    differ = {k: (v, ours[k]) for k, v in meta["model_config"].items() if k in ours and k != "dropout" and v != ours[k]}
    if differ:
        fields = ", ".join(f"{k}: file {a}, config {b}" for k, (a, b) in sorted(differ.items()))
        raise ValueError(f"{source}: config.json does not match the config ({fields}); set them with "
                         "--config.model.<field>=<value>.")


def _state_from_params(s: Experiment, params) -> task_lib.TrainState:
    """Step 0 with params = EMA = ``params``, a fresh optimizer state and the config's seed, in the
    training shardings."""
    want, have = jax.tree.structure(s.abstract_state.params), jax.tree.structure(params)
    if want != have:
        raise ValueError(f"The imported parameter tree {have} does not match the model's {want}.")
    with jax.set_mesh(s.mesh):
        params = jax.device_put(params, s.shardings.params)
        opt_state = jax.jit(s.optimizer.init, out_shardings=s.shardings.opt_state)(params)
        rng = jax.device_put(jax.random.key_data(jax.random.key(s.cfg.seed)), s.shardings.rng)
        step = jax.device_put(np.zeros((), np.int32), s.shardings.step)
    return task_lib.TrainState(step=step, params=params, opt_state=opt_state, ema_params=params, rng=rng)


def import_checkpoint(source: str, cfg, workdir: str, *, use_ema: bool = True) -> dict:
    """Writes step 0 of ``workdir`` from a file in any format ``formats.load_any`` reads.

    ``cfg``: the experiment config (its tokenizer fixes the vocabulary and mask id); saved with the
    step. ``use_ema``: take a Lightning file's EMA weights when it has them. Refuses a workdir that
    already holds checkpoints. Returns a summary (format, weights, step, workdir, seconds).
    """
    start = time.perf_counter()
    if _has_steps(workdir):
        raise ValueError(f"{workdir} already holds checkpoints; import into a new workdir.")
    mapping = mappings.mapping_for(cfg.model.name)
    s = experiment.build(cfg)
    sd, meta = formats.load_any(source, s.task.model, prefer_ema=use_ema)
    _check_vocab(sd, meta, s, source)
    params = mapping.from_torch(sd, s.task.model)
    del sd
    state = _state_from_params(s, params)
    del params
    ckpt = checkpoint.Checkpointer(workdir, async_save=False)
    try:
        ckpt.save(0, state, data_state=None, config=cfg.to_dict(), force=True)
    finally:
        ckpt.close()
    return dict(format=meta["format"], weights=meta["weights"], source=meta["path"], step=0, workdir=workdir,
                seconds=time.perf_counter() - start)


def _has_steps(workdir: str) -> bool:
    directory = epath.Path(workdir) / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


# ------------------------------------------------------------------------------------------ the CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mdlm_jax.interop", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("export", help="a training checkpoint -> an official-layout file", allow_abbrev=False)
    ex.add_argument("--workdir", required=True, help="the training workdir (or its checkpoints/ or a step directory)")
    ex.add_argument("--step", type=int, default=None, help="default: the newest readable step")
    ex.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    ex.add_argument("--out", required=True, help="a .ckpt / .pt file, a .safetensors file or a directory (hf)")
    ex.add_argument("--config", default="", help="replaces the config saved in the checkpoint")
    ex.add_argument("--mask-id", type=int, default=None, help="hf: the mask id, instead of the config's tokenizer's")
    ex.add_argument("--vocab-size", type=int, default=None,
                    help="the real vocabulary (mask included) of a padded checkpoint, instead of the tokenizer's")
    ex.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                    help="the EMA weights (default) or, with --no-ema, the raw params")
    im = commands.add_parser("import", help="an official-layout file -> step 0 of a workdir", allow_abbrev=False)
    im.add_argument("--from", dest="source", required=True,
                    help="a .ckpt / .pt / .safetensors file or a Hugging Face directory")
    im.add_argument("--config", required=True, help="configs/X.py[:quick]; --config.a.b=v overrides follow")
    im.add_argument("--workdir", required=True, help="a new workdir for the checkpoint")
    im.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                    help="a Lightning file's EMA weights (default) or, with --no-ema, its state_dict")
    return parser


def main(argv=None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        if rest and not args.config:
            raise ValueError(f"Unrecognized arguments {rest} (--config.a.b=v overrides need --config).")
        cfg = config_lib.load_file(args.config, rest) if args.config else None
        if args.command == "export":
            report: dict[str, Any] = export(args.workdir, args.out, fmt=args.format, step=args.step,
                                            use_ema=args.ema, cfg=cfg, mask_id=args.mask_id,
                                            vocab_size=args.vocab_size)
            print(f"Exported step {report['step']} ({report['weights']} weights) of {args.workdir} as {args.format}: "
                  f"{', '.join(report['paths'])} ({report['tensors']} tensors, {report['bytes'] / 2**20:.1f} MiB, "
                  f"{report['seconds']:.1f} s)")
        else:
            report = import_checkpoint(args.source, cfg, args.workdir, use_ema=args.ema)
            print(f"Imported {report['source']} ({report['format']}, {report['weights']} weights) as step 0 of "
                  f"{args.workdir} ({report['seconds']:.1f} s). Evaluate with: python -m mdlm_jax.main "
                  f"--config={args.config} {' '.join(rest)} --workdir={args.workdir} --mode=eval")
    except (OSError, ValueError, ImportError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
