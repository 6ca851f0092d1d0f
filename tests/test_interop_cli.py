"""``python -m mdlm_jax.interop export|import``: a short training run through every format and back
bit-exactly with the same eval PPL, the official golden case through import, and clear errors."""

import contextlib
import copy
import dataclasses
import json
import pickle
import shutil
import subprocess
import sys
import types
import typing
from collections import defaultdict

import jax
import numpy as np
import pytest
from tests_util import REPO, load_config

torch = pytest.importorskip("torch")

from mdlm_jax import checkpoint, experiment  # noqa: E402
from mdlm_jax.data import tokenizers  # noqa: E402
from mdlm_jax.evals import evaluate  # noqa: E402
from mdlm_jax.interop import cli, formats, mappings, params as dit_params  # noqa: E402
from mdlm_jax.models import vocab  # noqa: E402
from mdlm_jax.training import train  # noqa: E402

CONFIG = f"{REPO / 'configs' / 'quickstart.py'}:quick"
OUT = {"lightning": "model.ckpt", "state_dict": "model.pt", "safetensors": "model.safetensors", "hf": "hf"}
GOLDEN = "dit_h64_b2_n2_v50_l16_tc0"


def overrides(root):
    return [f"--config.data.cache_dir={root / 'cache'}", "--config.train.eval_every=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step quickstart run: (root, workdir, config, {params, ema_params} as numpy, step)."""
    root = tmp_path_factory.mktemp("interop_cli")
    cfg = load_config("quickstart", "quick")
    cfg.data.cache_dir = str(root / "cache")
    cfg.train.eval_every = 0
    work = root / "work"
    train.train_and_evaluate(cfg, str(work))
    arrays, _, step = checkpoint.restore_numpy(str(work), ("params", "ema_params"))
    assert step == cfg.train.steps
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(arrays["params"]),
                                                         jax.tree.leaves(arrays["ema_params"])))
    return root, work, cfg, arrays, step


@pytest.fixture(scope="module")
def evaluated(trained):
    """One setup (compiled once) and the eval metrics of the trained workdir."""
    _, work, cfg, _, _ = trained
    s = experiment.build(cfg)
    return s, evaluate.evaluate(s, restore(s, work))


def restore(s, workdir):
    ckpt = checkpoint.Checkpointer(str(workdir))
    try:
        return ckpt.restore(s.abstract_state)[0]
    finally:
        ckpt.close()


def run(*argv):
    return cli.main([str(a) for a in argv])


def export(trained, fmt, *extra, name=None):
    root, work, *_ = trained
    out = root / (name or fmt) / OUT[fmt]
    assert run("export", "--workdir", work, "--format", fmt, "--out", out, *extra) == 0
    return out


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype == np.float32 and np.array_equal(x, y)


@pytest.mark.parametrize("use_ema", [True, False], ids=["ema", "raw"])
@pytest.mark.parametrize("fmt", [f for f in cli.FORMATS if f != "hf-bert"])  # the DiT's; BERT's: test_bert_mdlm
def test_export_import_round_trip_is_bit_exact_with_same_eval(trained, evaluated, fmt, use_ema, capsys):
    root, _, cfg, arrays, step = trained
    out = export(trained, fmt, *([] if use_ema else ["--no-ema"]), name=f"{fmt}_{use_ema}")
    assert f"Exported step {step}" in capsys.readouterr().out
    # The workdir holds the padded vocabulary (model.vocab_multiple), the file only the real rows.
    vocab_size = evaluated[0].task.model.vocab_size
    rows = vocab.padded_size(vocab_size, cfg.model.vocab_multiple)
    assert arrays["params"]["vocab_embed"].shape[0] == rows > vocab_size
    assert formats.load_any(out)[0]["vocab_embed.embedding"].shape[0] == vocab_size
    imported = root / f"imported_{fmt}_{use_ema}"
    assert run("import", "--from", out, "--config", CONFIG, *overrides(root), "--workdir", imported) == 0
    got, saved, got_step = checkpoint.restore_numpy(str(imported), ("params", "ema_params"))
    assert got_step == 0 and saved["model"] == cfg.model.to_dict()
    want = arrays["ema_params" if use_ema else "params"]
    assert_trees_equal(got["params"], want)
    assert_trees_equal(got["ema_params"], want)
    if use_ema:  # evaluation uses the EMA weights: the imported workdir gives the identical bound
        s, metrics = evaluated
        assert evaluate.evaluate(s, restore(s, imported)) == metrics


def test_lightning_file_holds_raw_params_and_ema(trained):
    root, _, cfg, arrays, step = trained
    out = export(trained, "lightning", name="lightning_both")
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["global_step"] == step and len(ckpt["ema"]["shadow_params"]) == 30
    imported = root / "imported_lightning_raw"
    assert run("import", "--from", out, "--no-ema", "--config", CONFIG, *overrides(root), "--workdir", imported) == 0
    got, _, _ = checkpoint.restore_numpy(str(imported), ("ema_params",))
    assert_trees_equal(got["ema_params"], arrays["params"])


def test_training_resumes_from_the_imported_workdir(trained, evaluated):
    root, _, _, arrays, _ = trained
    imported = root / "imported_to_train"
    assert run("import", "--from", export(trained, "safetensors", name="to_train"), "--config", CONFIG,
               *overrides(root), "--workdir", imported) == 0
    s, _ = evaluated
    ckpt = checkpoint.Checkpointer(str(imported))
    try:
        state, data_state = train.restore_or_init(s, ckpt)  # what --mode=train does first
    finally:
        ckpt.close()
    assert int(state.step) == 0 and data_state is None  # a fresh data iterator
    assert_trees_equal(jax.device_get(state.params), arrays["ema_params"])  # restored, not a fresh init


def test_fine_tuning_from_an_imported_checkpoint_trains(trained):
    """``train.init_checkpoint``: imported EMA weights, a fresh optimizer, a few donated steps."""
    root, _, cfg, arrays, _ = trained
    imported = root / "imported_to_finetune"
    assert run("import", "--from", export(trained, "hf", name="to_finetune"), "--config", CONFIG,
               *overrides(root), "--workdir", imported) == 0
    tuned = cfg.copy_and_resolve_references()
    tuned.train.init_checkpoint = str(imported)
    work = root / "finetuned"
    s = experiment.build(tuned)
    ckpt = checkpoint.Checkpointer(str(work))
    try:
        state, _ = train.restore_or_init(s, ckpt)  # the empty workdir falls to init_checkpoint
    finally:
        ckpt.close()
    assert_trees_equal(jax.device_get(state.params), arrays["ema_params"])
    assert_trees_equal(jax.device_get(state.ema_params), arrays["ema_params"])
    train.train_and_evaluate(tuned, str(work))
    got, _, step = checkpoint.restore_numpy(str(work), ("params",))
    assert step == cfg.train.steps
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got["params"]),
                                                       jax.tree.leaves(arrays["ema_params"]))]
    assert any(moved)


class _GoldenTokenizer:
    """The golden case's vocabulary: 49 tokens, the mask appended (V = 50, mask id 49)."""

    name, vocab_size, mask_id = "golden49", 49, None


def test_golden_case_through_import_reproduces_official_logits(tmp_path, fixtures_dir, monkeypatch):
    z = np.load(fixtures_dir / f"{GOLDEN}.npz")
    case = json.loads(str(z["case_json"]))
    assert (case["hidden"], case["cond"], case["blocks"], case["heads"]) == (64, 32, 2, 2)  # the quick config's
    sd = {k[len("state_dict/"):]: z[k] for k in z.files if k.startswith("state_dict/")}
    monkeypatch.setitem(tokenizers.TOKENIZERS, "golden49", _GoldenTokenizer)
    cfg = load_config("quickstart", "quick")
    cfg.data.tokenizer = "golden49"
    s = experiment.build(cfg)
    assert (s.task.model.vocab_size, s.task.mask_id) == (case["vocab"], int(z["mask_index"]))
    path = tmp_path / "official.ckpt"
    formats.save_lightning(path, sd, s.task.model, ema_sd=sd)  # the official Lightning layout
    assert run("import", "--from", path, "--config", CONFIG, "--config.data.tokenizer=golden49",
               "--workdir", tmp_path / "work") == 0
    params = checkpoint.restore_numpy(str(tmp_path / "work"))[0]["ema_params"]
    logits = s.task.model.apply({"params": params}, z["xt"], z["sigma"])
    np.testing.assert_allclose(logits, z["logits"], rtol=1e-4, atol=1e-4)


# A stand-in for omegaconf 2.x, which is not installed: the module paths, class names and pickle
# behaviour of the classes a hydra config pickles as (from omegaconf's source): every class pickles
# by the default protocol-2 reduce (class + state); Node drops its flags cache from the state and
# BaseContainer also copies its metadata; the metadata are dataclasses whose resolver_cache is a
# defaultdict(dict) and whose types are typing.Any and builtin classes.


@dataclasses.dataclass
class _Metadata:
    ref_type: typing.Any
    object_type: typing.Any
    optional: bool
    key: typing.Any
    flags: typing.Optional[dict] = None
    flags_root: bool = False
    resolver_cache: dict = dataclasses.field(default_factory=lambda: defaultdict(dict))


@dataclasses.dataclass
class _ContainerMetadata(_Metadata):
    key_type: typing.Any = None
    element_type: typing.Any = None


class _Node:
    def __init__(self, parent, metadata):
        self.__dict__.update(_metadata=metadata, _parent=parent, _flags_cache=None)

    def __getstate__(self):
        state = copy.copy(self.__dict__)
        del state["_flags_cache"]
        return state


class _Container(_Node):
    pass


class _BaseContainer(_Container):
    def __getstate__(self):
        state = copy.copy(self.__dict__)
        state.pop("_flags_cache", None)
        state["_metadata"] = copy.copy(state["_metadata"])
        return state


class _DictConfig(_BaseContainer):
    pass


class _ListConfig(_BaseContainer):
    pass


class _ValueNode(_Node):
    pass


class _AnyNode(_ValueNode):
    pass


class _StringNode(_ValueNode):
    pass


_OMEGACONF = {"omegaconf.base": [_Metadata, _ContainerMetadata, _Node, _Container],
              "omegaconf.basecontainer": [_BaseContainer], "omegaconf.dictconfig": [_DictConfig],
              "omegaconf.listconfig": [_ListConfig], "omegaconf.nodes": [_ValueNode, _AnyNode, _StringNode]}


@contextlib.contextmanager
def fake_omegaconf():
    """Registers the stand-in as the ``omegaconf`` package while pickling; removes it after."""
    names = ["omegaconf", *_OMEGACONF]
    assert not any(name in sys.modules for name in names)
    sys.modules["omegaconf"] = types.ModuleType("omegaconf")
    for module_name, classes in _OMEGACONF.items():
        module = sys.modules[module_name] = types.ModuleType(module_name)
        for cls in classes:
            cls.__module__, cls.__qualname__ = module_name, cls.__name__.lstrip("_")
            setattr(module, cls.__qualname__, cls)
    try:
        yield
    finally:
        for name in names:
            del sys.modules[name]


def as_omegaconf(value, key=None, parent=None):
    """A nested dict / list of plain values -> the node tree OmegaConf.create builds (parents linked)."""
    if isinstance(value, (dict, list)):
        is_dict = isinstance(value, dict)
        node = (_DictConfig if is_dict else _ListConfig)(parent, _ContainerMetadata(
            ref_type=typing.Any, object_type=dict if is_dict else list, optional=True, key=key,
            flags={"struct": True} if parent is None else {}, key_type=typing.Any if is_dict else int,
            element_type=typing.Any))
        items = value.items() if is_dict else enumerate(value)
        content = {k: as_omegaconf(v, k, node) for k, v in items}
        node.__dict__["_content"] = content if is_dict else list(content.values())
        return node
    cls = _StringNode if isinstance(value, str) else _AnyNode
    node = cls(parent, _Metadata(ref_type=str if cls is _StringNode else typing.Any, object_type=None,
                                 optional=True, key=key, flags={}))
    node.__dict__["_val"] = value
    return node


# The shape of an official hydra config (values made up).
OFFICIAL_CONFIG = {
    "mode": "train", "backbone": "dit", "parameterization": "subs", "time_conditioning": False, "T": 0,
    "model": {"name": "small", "type": "ddit", "hidden_size": 64, "cond_dim": 32, "length": 128, "n_blocks": 2,
              "n_heads": 2, "scale_by_sigma": True, "dropout": 0.1},
    "training": {"ema": 0.9999, "antithetic_sampling": True, "sampling_eps": 1e-3},
    "data": {"train": "openwebtext", "tokenizer_name_or_path": "gpt2", "wrap": True},
    "callbacks": ["checkpoint_every_n_steps", "learning_rate_monitor"],
    "checkpointing": {"save_dir": "${cwd:}", "resume_ckpt_path": "${.save_dir}/checkpoints/last.ckpt"},
}


def test_official_lightning_checkpoint_with_omegaconf_imports(trained, tmp_path):
    """What the official training code writes: hyper_parameters with the omegaconf config and the
    tokenizer (save_hyperparameters() of Diffusion(config, tokenizer)), through the CLI without
    omegaconf installed, and none of their code run."""
    tokenizers_lib = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    root, _, _, arrays, step = trained
    exported = torch.load(export(trained, "lightning", name="official"), weights_only=True)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers_lib.Tokenizer(tokenizers_lib.models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")),
        unk_token="[UNK]")
    path = tmp_path / "official.ckpt"
    with fake_omegaconf():
        dict_config = as_omegaconf(OFFICIAL_CONFIG)
        dict_config._metadata.resolver_cache["cwd"]["()"] = "/work"  # what a caching resolver leaves
        hparams = {"config": dict_config, "tokenizer": tokenizer}
        torch.save(dict(exported, hparams_name="kwargs", hyper_parameters=hparams,
                        sampler={"random_state": torch.get_rng_state()},
                        callbacks={"ModelCheckpoint{'monitor': 'val/nll'}": {"best_model_score": torch.tensor(3.2),
                                                                           "dirpath": str(tmp_path)}}), path)
    assert "omegaconf" not in sys.modules
    pickled = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert {"omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.nodes.AnyNode",
            "omegaconf.base.ContainerMetadata", "typing.Any", "builtins.dict", "collections.defaultdict",
            "tokenizers.Tokenizer"} <= pickled
    with pytest.raises(pickle.UnpicklingError, match="omegaconf"):  # what the CLI hit before
        torch.load(path, weights_only=True)

    imported = tmp_path / "imported"
    done = subprocess.run([sys.executable, "-m", "mdlm_jax.interop", "import", "--from", str(path), "--config", CONFIG,
                           *overrides(root), "--workdir", str(imported)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    got, _, got_step = checkpoint.restore_numpy(str(imported), ("params", "ema_params"))
    assert got_step == 0
    assert_trees_equal(got["params"], arrays["ema_params"])  # the file's EMA
    assert_trees_equal(got["ema_params"], arrays["ema_params"])

    loaded = formats._read_torch(str(path), weights_only=True)  # what the import saw: inert stand-ins
    config = loaded["hyper_parameters"]["config"]
    assert isinstance(config, formats.Pickled) and config.pickled_name == "omegaconf.dictconfig.DictConfig"
    model = config.state["_content"]["model"]
    assert model.state["_parent"] is config and model.state["_content"]["n_heads"].state["_val"] == 2
    metadata = config.state["_metadata"].state
    assert metadata["flags"] == {"struct": True} and metadata["resolver_cache"] == {"cwd": {"()": "/work"}}
    assert isinstance(loaded["hyper_parameters"]["tokenizer"], formats.Pickled)
    assert loaded["global_step"] == step


# ------------------------------------------------------------------------------------------- errors


def error(capsys, *argv):
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_import_errors_name_the_problem(trained, capsys, tmp_path):
    root = trained[0]
    pt, hf = export(trained, "state_dict", name="errors"), export(trained, "hf", name="errors")
    base = ["import", "--config", CONFIG, *overrides(root)]
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.model.cond_dim=16")
    assert "Parameter blocks_0/adaLN_modulation/kernel: checkpoint shape (32, 384) does not match the config's " \
           "(16, 384)" in err
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.data.tokenizer=text8")
    assert "vocabulary has 260 entries" in err and "'text8' gives 35 (mask id 4)" in err
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.model.n_blocks=3")
    assert "missing keys ['blocks.2.adaLN_modulation.bias'" in err
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.model.n_heads=4")
    assert "rotary_emb.inv_freq has shape (16,) but the model config (hidden_size 64, n_heads 4) expects (8,)" in err
    assert "set n_heads=2 in the model config (--config.model.n_heads=2)" in err
    err = error(capsys, *base, "--from", pt, "--workdir", tmp_path / "a", "--config.model.hidden_size=32")
    assert "blocks.0.attn_qkv.weight has shape (192, 64) but the model config expects (96, 32)" in err
    assert "(--config.model.hidden_size=64)" in err
    sd, _ = formats.load_any(pt)
    formats.save_state_dict(tmp_path / "extra.pt", dict(sd, **{"blocks.0.extra.weight": np.zeros(2, np.float32)}))
    err = error(capsys, *base, "--from", tmp_path / "extra.pt", "--workdir", tmp_path / "a")
    assert "unexpected keys ['blocks.0.extra.weight']" in err
    edited = tmp_path / "hf"
    shutil.copytree(hf, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps(dict(config, mask_token_id=7)))
    err = error(capsys, *base, "--from", edited, "--workdir", tmp_path / "a")
    assert "mask_token_id 7" in err and "259" in err
    err = error(capsys, *base, "--from", tmp_path / "missing.pt", "--workdir", tmp_path / "a")
    assert "No checkpoint at" in err
    err = error(capsys, *base, "--from", pt, "--workdir", trained[1])
    assert "already holds checkpoints" in err
    assert not (tmp_path / "a").exists()


def test_export_errors_name_the_problem(trained, capsys, tmp_path):
    root, work, *_ = trained
    err = error(capsys, "export", "--workdir", work, "--format", "onnx", "--out", tmp_path / "x")
    assert "Unknown format 'onnx'" in err
    err = error(capsys, "export", "--workdir", tmp_path / "nowhere", "--format", "hf", "--out", tmp_path / "x")
    assert "No checkpoint in" in err
    err = error(capsys, "export", "--workdir", work, "--step", "7", "--format", "hf", "--out", tmp_path / "x")
    assert "No checkpoint step 7" in err and "(steps: [2])" in err
    err = error(capsys, "export", "--workdir", work, "--format", "lightning", "--out", tmp_path / "x.zip")
    assert ".ckpt" in err
    err = error(capsys, "export", "--workdir", work, "--format", "hf", "--out", tmp_path / "x", "--config", CONFIG,
                "--config.model.hidden_size=32")
    assert "checkpoint shape" in err and "does not match the config's" in err
    err = error(capsys, "export", "--workdir", work, "--format", "hf", "--out", tmp_path / "x",
                "--config.model.hidden_size=32")
    assert "need --config" in err
    err = error(capsys, "export", "--workdir", work, "--format", "hf-bert", "--out", tmp_path / "x")
    assert "--format hf-bert is the format of model.name 'bert'" in err and "holds model.name 'dit'" in err
    err = error(capsys, "export", "--workdir", work, "--format", "state_dict", "--out", tmp_path / "x.pt",
                "--vocab-size", "200")
    assert "not 200 entries padded to a multiple of 128 (model.vocab_multiple)" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.pt").exists()


def test_layouts_are_keyed_by_model_name(trained, tmp_path):
    """The CLI converts through the layout registered for model.name, and names a model without one."""
    _, work, cfg, *_ = trained
    assert mappings.mapping_for("dit").to_torch is dit_params.params_to_torch
    other = cfg.copy_and_resolve_references()
    other.model.name = "toy_unmapped_backbone"
    with pytest.raises(ValueError, match=r"model.name 'toy_unmapped_backbone' has no PyTorch layout "
                                         r"\(registered: \['bert', 'dit'.*register_mapping"):
        cli.export(str(work), str(tmp_path / "x.pt"), fmt="state_dict", cfg=other)
    with pytest.raises(ValueError, match="already has a PyTorch mapping"):
        mappings.register_mapping("dit", mappings.mapping_for("dit"))
    assert not (tmp_path / "x.pt").exists()


def test_module_entry_point(trained, tmp_path):
    """``python -m mdlm_jax.interop``: a real export, and an error as one line without a traceback."""
    _, work, *_ = trained
    cmd = [sys.executable, "-m", "mdlm_jax.interop", "export", "--workdir", str(work), "--format", "safetensors"]
    done = subprocess.run(cmd + ["--out", str(tmp_path / "m.safetensors")], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    sd, meta = formats.load_any(tmp_path / "m.safetensors")
    assert meta["format"] == "safetensors" and "vocab_embed.embedding" in sd
    done = subprocess.run(cmd + ["--out", str(tmp_path / "x"), "--step", "9"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: No checkpoint step 9")
    assert "Traceback" not in done.stderr
