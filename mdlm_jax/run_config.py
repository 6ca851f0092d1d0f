"""The config a run uses: on a workdir with a checkpoint, the checkpoint's saved config is the truth.

Every mode starts from the config saved with the checkpoint (so ``--mode=eval --workdir=W`` needs
nothing else); the command line changes only the fields it names (``--config.a.b=v``). Fields are
of four kinds:

* ``MODEL_FIELDS`` decide what the parameters mean (architecture, objective, noise schedule,
  tokenizer): changing one, on the command line or in the ``--config`` file, is refused.
* ``DATA_FIELDS`` decide what a run trains on: changing one is refused for a resumed training run,
  and applied with a warning in the other modes (evaluating on another split is legitimate).
* ``MACHINE_FIELDS`` say how and where the run executes (mesh, kernels, paths): taken from the
  command line and the ``--config`` file as given, without comment.
* everything else (steps, learning rate, evaluation and sampler settings): a named override is
  applied with a log line; a value that only the ``--config`` file changes keeps the checkpoint's,
  with a warning saying how to change it.

``--allow_config_change`` takes every changed value as given instead of refusing, with a warning
for each: the user's explicit request.
"""

from __future__ import annotations

from typing import NamedTuple

from mdlm_jax import config as config_lib

MODEL_FIELDS = ("model.name", "model.n_blocks", "model.hidden_size", "model.n_heads", "model.cond_dim",
                "model.mlp_ratio", "model.time_conditioning", "diffusion.parameterization", "diffusion.subs_masking",
                "diffusion.schedule", "diffusion.schedule_params", "diffusion.sampling_eps", "data.tokenizer",
                "diffusion.change_of_variables",  # under change of variables the backbone sees t, not sigma
                "model.bert", "model.vocab_multiple")
DATA_FIELDS = ("seed", "data.source", "data.files", "data.txt_split", "data.jsonl_field", "data.seq_len",
               "data.packing", "data.detokenizer", "data.owt_val_documents", "data.val_fraction",
               "train.batch_size", "diffusion.time_sampler", "diffusion.num_steps", "diffusion.importance_sampling")
MACHINE_FIELDS = ("mesh", "distributed", "model.dtype", "model.attention_impl", "model.remat", "model.loss_chunk",
                  "model.fused_loss", "model.scan_blocks", "data.path", "data.tfds_data_dir", "data.tokenizer_path",
                  "data.cache_dir", "data.allow_download", "train.async_checkpoints", "train.peak_tflops",
                  "train.preemption_check_every", "train.microbatches", "model.pretrained")


class ConfigMismatch(ValueError):
    """The requested config contradicts the checkpoint's in a field that must not change."""


class Resolved(NamedTuple):
    cfg: object                # the locked ConfigDict the run uses
    warnings: list[str]        # one line each, to log as warnings
    notes: list[str]           # one line each, to log as info


def kind(path: str) -> str:
    """'model', 'data', 'machine' or 'other': which of the module docstring's rules a field follows."""
    def under(prefixes):
        return any(path == p or path.startswith(p + ".") for p in prefixes)

    if under(MODEL_FIELDS):
        return "model"
    if under(DATA_FIELDS):
        return "data"
    return "machine" if under(MACHINE_FIELDS) else "other"


def resolve(mode: str, requested, overrides: dict, saved: dict | None, *, config_given: bool,
            allow_change: bool = False, where: str = "the workdir") -> Resolved:
    """The config for ``mode`` ('train', 'eval', 'zero_shot', 'sample').

    ``requested``: the ``--config`` file's config with the command-line overrides applied (the
    defaults when no file was given: ``config_given`` False); ``overrides``: {'a.b': value} of the
    fields the command line named; ``saved``: the checkpoint's config dict, or None when the workdir
    has no checkpoint (then ``requested`` is used as it is). ``where`` names the checkpoint in
    messages. Raises ConfigMismatch listing every refused field with the fix.
    """
    if saved is None:
        return Resolved(requested, [], [])
    cfg, unknown = config_lib.from_saved(saved)
    warnings = [f"The checkpoint's config has field {p!r}, unknown to this version: ignored." for p in unknown]
    notes = []
    have, want = config_lib.flatten(cfg), config_lib.flatten(requested)
    legacy = config_lib.legacy_fields(saved)
    refused = []
    for path in sorted(want):
        old, new = have.get(path), want[path]
        if old == new:
            continue
        named = path in overrides
        if path in legacy and not named:
            continue  # the checkpoint predates the field: today's default is not a request to change it
        if not named and not config_given:
            continue  # the defaults stand in for a --config that was not given
        source = f"--config.{path}" if named else "the --config file"
        change = f"{path}: checkpoint {old!r}, {source} {new!r}"
        k = kind(path)
        if k == "machine":
            config_lib.set_field(cfg, path, new)
        elif allow_change:
            config_lib.set_field(cfg, path, new)
            if k in ("model", "data"):
                warnings.append(f"{change}: used (--allow_config_change).")
            else:
                notes.append(f"{change}: used.")
        elif k == "model" or (k == "data" and mode == "train"):
            refused.append((k, change))
        elif not named:
            warnings.append(f"{change}: keeping the checkpoint's value (name it on the command line, "
                            f"--config.{path}=..., to change it).")
        elif k == "data":
            config_lib.set_field(cfg, path, new)
            warnings.append(f"{change}: {mode} uses the new value, not what the model was trained on.")
        else:
            config_lib.set_field(cfg, path, new)
            notes.append(f"{change}: used.")
    if refused:
        raise ConfigMismatch(_refusal(refused, mode, where))
    cfg.lock()
    return Resolved(cfg, warnings, notes)


def _refusal(refused: list, mode: str, where: str) -> str:
    what = []
    if any(k == "model" for k, _ in refused):
        what.append("the model's architecture or meaning (its parameters would be read as another model's)")
    if any(k == "data" for k, _ in refused):
        what.append("the data a resumed training run trains on")
    fix = ("use another --workdir for the new experiment, or delete the old checkpoints there"
           if mode == "train" else "drop these settings to use the checkpoint's")
    lines = "\n".join(f"  {change}" for _, change in refused)
    return (f"The checkpoint in {where} was trained with another config; these fields change "
            f"{' and '.join(what)}:\n{lines}\nFix: {fix}, or pass --allow_config_change to use the new values "
            "anyway.")
