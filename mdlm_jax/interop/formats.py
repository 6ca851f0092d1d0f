"""Checkpoint files in the official MDLM layouts (SPEC section 10), on numpy ``state_dict``s.

Every function takes or returns ``{official name: np.ndarray}`` with bare names (no
``backbone.``), as ``params_to_torch`` / ``params_from_torch`` produce and accept, so a caller
holding Flax params (from orbax or elsewhere) is one conversion away from any format:

* ``save_state_dict``: a plain ``torch.save`` of ``{name: tensor}`` (``.pt`` / ``.bin``).
* ``save_lightning``: an official-style Lightning ``.ckpt``, loadable by ``Diffusion.load_from_checkpoint``.
* ``save_hf``: ``model.safetensors`` + ``config.json`` as in the ``kuleshov-group/mdlm-owt`` release,
  with this package's remote code (``configuration_mdlm.py``, ``modeling_mdlm.py``, ``torch_dit.py``)
  for ``AutoModelForMaskedLM.from_pretrained(dir, trust_remote_code=True)``.
* ``load_any``: reads any of the above (or a bare ``.safetensors`` file), picking EMA weights when
  a Lightning file has them.

torch is imported only to write or read ``.ckpt`` / ``.pt`` files; safetensors needs only numpy.
Torch files are read with torch's restricted (``weights_only``) unpickler; the config and tokenizer
objects an official Lightning file pickles in ``hyper_parameters`` load as inert ``Pickled``
stand-ins, so neither omegaconf nor their code is needed, and anything else is refused.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
from typing import Any, Mapping, Optional

import numpy as np

from mdlm_jax.interop.params import (ROTARY_BUFFER, as_numpy, params_from_torch, params_to_torch,
                                     torch_param_names)

PREFIX = "backbone."
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
HF_WEIGHTS, HF_CONFIG = "model.safetensors", "config.json"
# The remote code config.json's auto_map names: modules of this package, which transformers loads
# from the export directory (modeling_mdlm imports the other two relatively).
HF_CODE = ("configuration_mdlm.py", "modeling_mdlm.py", "torch_dit.py")
EMA_DECAY = 0.9999
# The Lightning release the official code pins; loaders migrate checkpoints by this key.
LIGHTNING_VERSION = "2.2.1"
ACCEPTED = ("a directory holding model.safetensors (+ config.json), a .safetensors file, a Lightning "
            ".ckpt, or a torch state_dict .pt/.pth/.bin")


def _torch():
    try:
        import torch
    except ImportError as err:  # torch is optional for the package
        raise ImportError("Reading or writing .ckpt/.pt files needs PyTorch: pip install torch.") from err
    return torch


def _field(cfg: Any, name: str, default: Any = None):
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def _bare(sd: Mapping[str, Any]) -> dict[str, Any]:
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in sd.items()}


def _canonical(sd: Mapping[str, Any], model_config) -> dict[str, np.ndarray]:
    """Validates names and shapes against the config; returns float32 arrays in ``state_dict``
    order with the rotary buffer (raises ValueError naming what does not match)."""
    return params_to_torch(params_from_torch(sd, model_config), model_config)


def _tensors(sd: Mapping[str, np.ndarray], prefix: str = "") -> dict:
    torch = _torch()
    return {prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


# ----------------------------------------------------------------------------------------- writers


def save_state_dict(path: str | os.PathLike, sd: Mapping[str, np.ndarray]) -> None:
    """``torch.save({name: tensor})`` with the names of ``sd`` as given (usually bare)."""
    _torch().save(_tensors(sd), os.fspath(path))


def save_lightning(path: str | os.PathLike, sd: Mapping[str, np.ndarray], model_config, *,
                   ema_sd: Optional[Mapping[str, np.ndarray]] = None, step: int = 0) -> None:
    """Writes an official-style Lightning checkpoint holding only plain containers and tensors
    (so ``torch.load(path, weights_only=True)`` reads it):

    * ``state_dict``: ``backbone.<name>`` for every parameter plus ``backbone.rotary_emb.inv_freq``;
    * ``ema`` (only when ``ema_sd`` is given): ``{'decay': 0.9999, 'num_updates': step,
      'shadow_params': [...]}``, the list in ``torch_param_names(model_config)`` order;
    * ``epoch`` 0, ``global_step`` step, ``pytorch-lightning_version``, and the two ``loops``
      counters the official ``on_load_checkpoint`` reads.

    No optimizer or scheduler states: it is for evaluation and sampling, not for resuming official
    training. The official loader with ``training.ema > 0`` expects ``ema``; pass the raw weights
    as ``ema_sd`` when there is no EMA. ``sd`` / ``ema_sd``: bare or prefixed numpy state_dicts.
    """
    torch = _torch()
    checkpoint: dict[str, Any] = {
        "epoch": 0,
        "global_step": int(step),
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "state_dict": _tensors(_canonical(sd, model_config), PREFIX),
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 0}},
                               "epoch_loop.batch_progress": {"current": {"completed": int(step)}}}},
    }
    if ema_sd is not None:
        ema = _tensors(_canonical(ema_sd, model_config))
        checkpoint["ema"] = {"decay": EMA_DECAY, "num_updates": int(step),
                             "shadow_params": [ema[name] for name in torch_param_names(model_config)]}
    torch.save(checkpoint, os.fspath(path))


def hf_config(model_config, *, vocab_size: int, mask_id: int, length: int) -> dict:
    """The ``config.json`` of the ``kuleshov-group/mdlm-owt`` layout (remote code
    ``configuration_mdlm.MDLMConfig`` / ``modeling_mdlm.MDLM``, shipped by ``save_hf``).
    ``mask_token_id`` is ours: the release keeps the mask id implicit (``vocab_size - 1`` for
    GPT-2) and its remote config class stores unknown keys untouched."""
    if _field(model_config, "causal", False):
        raise ValueError("The Hugging Face MDLM layout has no AR variant; save the AR backbone as a "
                         "state_dict or Lightning checkpoint.")
    mlp_ratio = _field(model_config, "mlp_ratio", 4)
    if mlp_ratio != 4:
        raise ValueError(f"The Hugging Face MDLM code fixes mlp_ratio = 4; got {mlp_ratio}.")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} must lie in [0, vocab_size = {vocab_size}).")
    return {
        "architectures": ["MDLM"],
        "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig",
                     "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
        "model_type": "mdlm",
        "vocab_size": int(vocab_size),
        "model_length": int(length),
        "hidden_dim": int(_field(model_config, "hidden_size")),
        "cond_dim": int(_field(model_config, "cond_dim")),
        "n_blocks": int(_field(model_config, "n_blocks")),
        "n_heads": int(_field(model_config, "n_heads")),
        "dropout": float(_field(model_config, "dropout", 0.1)),
        "time_conditioning": bool(_field(model_config, "time_conditioning", False)),
        "mask_token_id": int(mask_id),
        "torch_dtype": "float32",
    }


def model_config_from_hf(config: Mapping[str, Any]) -> dict:
    """``config.json`` fields -> ``mdlm_jax.models.DiT`` keyword arguments."""
    try:
        return {"vocab_size": int(config["vocab_size"]), "hidden_size": int(config["hidden_dim"]),
                "cond_dim": int(config["cond_dim"]), "n_blocks": int(config["n_blocks"]),
                "n_heads": int(config["n_heads"]), "dropout": float(config.get("dropout", 0.1)),
                "time_conditioning": bool(config.get("time_conditioning", False)), "causal": False}
    except KeyError as err:
        raise ValueError(f"config.json lacks the MDLM field {err}.") from err


def save_hf(directory: str | os.PathLike, sd: Mapping[str, np.ndarray], model_config, *,
            vocab_size: int, mask_id: int, length: int) -> None:
    """Writes ``directory/model.safetensors`` (``backbone.<name>``, rotary buffer included, format
    metadata ``pt`` as transformers expects), ``directory/config.json`` (``hf_config``) and the
    remote code files ``HF_CODE``."""
    from safetensors.numpy import save_file

    config = hf_config(model_config, vocab_size=vocab_size, mask_id=mask_id, length=length)
    sd = _canonical(sd, model_config)
    if sd["vocab_embed.embedding"].shape[0] != vocab_size:
        raise ValueError(f"vocab_size {vocab_size} does not match the embedding's "
                         f"{sd['vocab_embed.embedding'].shape[0]} rows.")
    os.makedirs(directory, exist_ok=True)
    save_file({PREFIX + k: v for k, v in sd.items()}, os.path.join(directory, HF_WEIGHTS),
              metadata={"format": "pt"})
    with open(os.path.join(directory, HF_CONFIG), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    for name in HF_CODE:
        shutil.copyfile(os.path.join(os.path.dirname(__file__), name), os.path.join(directory, name))


# ------------------------------------------------------------------------------------------ reader


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {err}") from err


class Pickled:
    """What a restricted load leaves for an object of a class it does not import (an omegaconf
    ``DictConfig``, a tokenizer): the class's pickled name, the arguments its pickle passes to the
    constructor (``args``) and the state it restores (``state``), with none of the class's code run."""

    pickled_name = ""

    def __new__(cls, *args, **kwargs):
        inst = super().__new__(cls)
        inst.args, inst.state = args, None
        return inst

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"Pickled({self.pickled_name})"


@functools.cache
def _pickled_class(name: str) -> type:
    return type(name.rpartition(".")[2], (Pickled,), {"pickled_name": name})


def _plain_dict(*_factory) -> dict:
    return {}


# What the official training code pickles besides tensors and containers: save_hyperparameters()
# keeps the omegaconf config (its metadata names typing and builtin types, and a defaultdict) and
# the transformers tokenizer in hyper_parameters. Only these names become stand-ins.
_STAND_IN_PREFIXES = ("omegaconf.", "tokenizers.", "typing.")
_STAND_IN_NAMES = {f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "int", "float", "bool", "bytes")}


def _stand_in(name: str):
    if name == "collections.defaultdict":  # a plain dict, so that the pickle can fill it
        return _plain_dict
    transformers_tokenizer = name.startswith("transformers.") and ".tokenization_" in name
    if name.startswith(_STAND_IN_PREFIXES) or name in _STAND_IN_NAMES or transformers_tokenizer:
        return _pickled_class(name)
    return None


def _scan_globals(torch, path: str) -> tuple[list, list[str]]:
    """The pickle's globals beyond torch's allowlist -> (``(stand-in, name)`` pairs for
    ``torch.serialization.safe_globals``, the names that stay refused)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError, EOFError, pickle.UnpicklingError):
        return [], []  # not a zip checkpoint, or a damaged one: torch.load says which
    found = {name: _stand_in(name) for name in names}
    return ([(obj, name) for name, obj in found.items() if obj is not None],
            sorted(name for name, obj in found.items() if obj is None))


def _read_torch(path: str, weights_only: bool):
    torch = _torch()
    trust = ("if you trust the file, call load_any(..., weights_only=False) (it runs the file's pickled "
             "code).")
    try:
        if not weights_only:
            return torch.load(path, map_location="cpu", weights_only=False)
        stand_ins, refused = _scan_globals(torch, path)
        if refused:
            raise ValueError(f"{path} pickles Python objects beyond tensors, containers and known config classes "
                             f"({', '.join(refused)}); {trust}")
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if weights_only and "Weights only load failed" in str(err):
            raise ValueError(f"{path} holds Python objects beyond tensors and containers; {trust}") from err
        raise ValueError(f"{path} is not a readable torch checkpoint (corrupt or truncated?): {err}") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable torch checkpoint (corrupt or truncated?): {err}") from err


def _from_lightning(path: str, checkpoint: Mapping, model_config, prefer_ema: bool):
    """Backbone weights of a Lightning checkpoint, EMA shadow params mapped back to names."""
    raw = {k[len(PREFIX):]: as_numpy(v) for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
    if not raw:
        raise ValueError(f"{path}: the Lightning state_dict has no 'backbone.' entries.")
    meta = {"format": "lightning", "weights": "raw", "global_step": checkpoint.get("global_step"),
            "ignored_keys": sorted(k for k in checkpoint["state_dict"] if not k.startswith(PREFIX))}
    ema = checkpoint.get("ema")
    if not (prefer_ema and ema and ema.get("shadow_params") is not None):
        return raw, meta
    # backbone.parameters() order: the config's table, else the state_dict order minus buffers.
    names = (torch_param_names(model_config) if model_config is not None
             else [k for k in raw if k != ROTARY_BUFFER])
    shadow = ema["shadow_params"]
    if len(shadow) != len(names):
        raise ValueError(f"{path}: the EMA holds {len(shadow)} tensors but the model has {len(names)} "
                         "parameters; the checkpoint does not match the model config.")
    out = dict(raw)
    for name, value in zip(names, shadow):
        value = as_numpy(value)
        if name in raw and raw[name].shape != value.shape:
            raise ValueError(f"{path}: EMA tensor for {name} has shape {value.shape}, the state_dict "
                             f"{raw[name].shape}; the EMA order does not match the model config.")
        out[name] = value
    meta.update(weights="ema", ema_decay=ema.get("decay"), ema_num_updates=ema.get("num_updates"))
    return out, meta


def load_any(path: str | os.PathLike, model_config=None, *, prefer_ema: bool = True,
             weights_only: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Reads a checkpoint in any supported layout -> ``(state_dict, meta)``.

    ``state_dict``: ``{bare official name: np.ndarray}`` in the stored dtype (bfloat16 as
    ``ml_dtypes.bfloat16``), ready for ``params_from_torch``.
    ``meta``: ``format`` (``hf`` / ``safetensors`` / ``lightning`` / ``state_dict``), ``path``,
    ``weights`` (``ema`` when taken from a Lightning EMA list, else ``raw``: the tensors stored by
    name, which a release may itself have filled with EMA values), plus ``hf_config`` and
    ``model_config`` (DiT kwargs) for a Hugging Face directory, and ``global_step``, ``ema_decay``,
    ``ema_num_updates``, ``ignored_keys`` (non-backbone entries) for Lightning files.

    ``model_config`` gives the EMA list's name order (``torch_param_names``); without it the order
    is the checkpoint's ``state_dict`` order minus buffers, which is the same for official files.
    ``weights_only=True`` reads torch files with torch's restricted unpickler, loading the omegaconf
    config and tokenizer objects of official Lightning files as inert ``Pickled`` stand-ins and
    refusing any other class or function; ``weights_only=False`` unpickles (and so runs) arbitrary
    objects: use it only for trusted files.
    Raises FileNotFoundError, or ValueError for an unknown layout, an unreadable file, or an EMA
    list that does not fit the model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path}.")
    meta: dict[str, Any]
    if os.path.isdir(path):
        weights = os.path.join(path, HF_WEIGHTS)
        if not os.path.isfile(weights):
            raise ValueError(f"{path} is a directory without {HF_WEIGHTS}; expected {ACCEPTED}.")
        sd = _bare(_read_safetensors(weights))
        meta = {"format": "hf", "weights": "raw"}
        config_path = os.path.join(path, HF_CONFIG)
        if os.path.isfile(config_path):
            try:
                with open(config_path) as f:
                    meta["hf_config"] = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{config_path} is not valid JSON: {err}") from err
            meta["model_config"] = model_config_from_hf(meta["hf_config"])
    elif path.endswith(".safetensors"):
        sd, meta = _bare(_read_safetensors(path)), {"format": "safetensors", "weights": "raw"}
    elif path.endswith(TORCH_SUFFIXES):
        obj = _read_torch(path, weights_only)
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            sd, meta = _from_lightning(path, obj, model_config, prefer_ema)
        elif isinstance(obj, Mapping) and obj and all(hasattr(v, "detach") for v in obj.values()):
            sd = {k: as_numpy(v) for k, v in _bare(obj).items()}
            meta = {"format": "state_dict", "weights": "raw"}
        else:
            raise ValueError(f"{path} holds neither a Lightning checkpoint (a dict with 'state_dict') nor "
                             "a state_dict of tensors.")
    else:
        raise ValueError(f"Unknown checkpoint format for {path}; expected {ACCEPTED}.")
    meta["path"] = path
    return sd, meta
