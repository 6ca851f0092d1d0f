"""PyTorch interop: the torch DiT against Flax and the official golden logits, and the checkpoint
file layouts (state_dict, Lightning, Hugging Face) round-tripping bit-exactly through load_any."""

import fractions
import json
import os
import subprocess
import sys
import typing

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file as save_torch_safetensors  # noqa: E402

from mdlm_jax.interop import (load_any, params_from_torch, params_to_torch, save_hf,  # noqa: E402
                              save_lightning, save_state_dict, torch_param_names)
from mdlm_jax.interop.formats import hf_config, model_config_from_hf  # noqa: E402
from mdlm_jax.interop.params import rotary_inv_freq  # noqa: E402
from mdlm_jax.interop.torch_dit import DiT as TorchDiT  # noqa: E402
from mdlm_jax.models import DiT  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-4)
SMALL = dict(vocab_size=50, hidden_size=64, cond_dim=32, n_blocks=2, n_heads=2)
LARGER = dict(vocab_size=61, hidden_size=96, cond_dim=48, n_blocks=3, n_heads=4)


def randomize(params, seed):
    """Every leaf random, including the zero-init adaLN / output layers, at a sane scale."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        noise = rng.standard_normal(shape).astype(np.float32)
        if name == "scale":
            return 1 + 0.2 * noise
        if name == "bias":
            return 0.2 * noise
        if name == "vocab_embed":
            return noise
        fan_in = shape[0] * shape[1] if name == "attn_out" else shape[0]  # (H, d, D) vs (in, ...)
        return noise / np.float32(np.sqrt(fan_in))

    return jax.tree_util.tree_map_with_path(draw, params)


def random_params(model, seed=0):
    boxed = model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32), jnp.zeros((1,)))["params"]
    return randomize(jax.tree.map(np.asarray, nn.meta.unbox(boxed)), seed)


def torch_model(model, sd):
    """The torch twin of a Flax DiT, loaded strictly from a numpy state_dict, in eval mode."""
    module = TorchDiT.from_config(model).eval()
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    return module


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype == np.float32 and np.array_equal(x, y)


# ---------------------------------------------------------------------------------- forward parity


@pytest.mark.parametrize("kind", ["dit_tc0", "dit_tc1", "ar"])
@pytest.mark.parametrize("size,length", [(SMALL, 16), (LARGER, 32)])
def test_random_weight_parity_with_flax(kind, size, length):
    model = DiT(**size, causal=kind == "ar", time_conditioning=kind == "dit_tc1")
    params = random_params(model, seed=length)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, size["vocab_size"], (3, length))
    sigma = rng.uniform(0.1, 5.0, (3,)).astype(np.float32)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(sigma)))
    module = torch_model(model, params_to_torch(params, model))
    with torch.no_grad():
        theirs = module(torch.from_numpy(tokens), torch.from_numpy(sigma))
    assert theirs.dtype == torch.float32 and theirs.shape == (3, length, size["vocab_size"])
    assert np.abs(ours).max() > 1.0  # the random weights make the logits non-trivial
    np.testing.assert_allclose(theirs.numpy(), ours, **TOL)


def test_time_conditioning_false_ignores_sigma_but_keeps_adaln():
    model = DiT(**SMALL)
    module = torch_model(model, params_to_torch(random_params(model), model))
    tokens = torch.zeros((2, 8), dtype=torch.long)
    with torch.no_grad():
        a = module(tokens, torch.tensor([0.3, 4.0]))
        b = module(tokens, torch.zeros(2))
        module.time_conditioning = True
        c = module(tokens, torch.tensor([0.3, 4.0]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def golden(fixtures_dir, name):
    z = np.load(fixtures_dir / f"{name}.npz")
    case = json.loads(str(z["case_json"]))
    model = DiT(vocab_size=case["vocab"], hidden_size=case["hidden"], cond_dim=case["cond"],
                n_blocks=case["blocks"], n_heads=case["heads"], causal=case["backbone"] == "ar",
                time_conditioning=case["time_conditioning"])
    sd = {k[len("state_dict/"):]: z[k] for k in z.files if k.startswith("state_dict/")}
    return z, model, sd


FIXTURES = ["dit_h64_b2_n2_v50_l16_tc0", "ar_h64_b2_n2_v50_l16"]


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_logits_and_layout(fixtures_dir, name):
    z, model, sd = golden(fixtures_dir, name)
    module = torch_model(model, sd)
    assert list(module.state_dict()) == [str(k) for k in z["state_dict_keys"]]
    assert [n for n, _ in module.named_parameters()] == [str(k) for k in z["ema_param_names"]]
    with torch.no_grad():
        if model.causal:
            logits = module(torch.from_numpy(z["x0"]))
        else:
            logits = module(torch.from_numpy(z["xt"]), torch.from_numpy(z["sigma"]))
            module.time_conditioning = True
            raw = module(torch.from_numpy(z["xt"]), torch.from_numpy(z["sigma"]))
            np.testing.assert_allclose(raw.numpy(), z["logits_raw_sigma"], **TOL)
    np.testing.assert_allclose(logits.numpy(), z["logits"], **TOL)


@pytest.mark.parametrize("name", FIXTURES)
def test_torch_init_follows_official(fixtures_dir, name):
    z, model, _ = golden(fixtures_dir, name)
    torch.manual_seed(0)
    sd = {k: v.detach().numpy() for k, v in TorchDiT.from_config(model).named_parameters()}
    for key, value in sd.items():
        lo, hi, _, _ = z[f"init_stats/{key}"]
        if lo == hi:  # exact zeros or ones
            np.testing.assert_array_equal(value, lo, err_msg=key)
            continue
        bound = 1 / np.sqrt(sd[key.replace(".bias", ".weight")].shape[1])  # torch weights are (out, in)
        assert max(-lo, hi) <= bound * (1 + 1e-6) and np.abs(value).max() <= bound * (1 + 1e-6), key
        assert np.abs(value).max() > 0.5 * bound, key


# ------------------------------------------------------------------------------------ file formats


@pytest.fixture(scope="module", params=["dit", "ar"])
def setup(request):
    model = DiT(**SMALL, causal=request.param == "ar")
    return model, random_params(model, 3), random_params(model, 4)


def write(fmt, path, model, params, ema_params):
    sd = params_to_torch(params, model)
    if fmt == "state_dict":
        save_state_dict(path / "model.pt", sd)
        return path / "model.pt"
    if fmt == "hf":
        save_hf(path / "hf", sd, model, vocab_size=model.vocab_size, mask_id=model.vocab_size - 1, length=16)
        return path / "hf"
    ema_sd = params_to_torch(ema_params, model) if fmt == "lightning_ema" else None
    save_lightning(path / "last.ckpt", sd, model, ema_sd=ema_sd, step=7)
    return path / "last.ckpt"


@pytest.mark.parametrize("fmt", ["state_dict", "lightning", "lightning_ema", "hf"])
def test_round_trip_is_bit_exact(setup, tmp_path, fmt):
    model, params, ema_params = setup
    if fmt == "hf" and model.causal:
        with pytest.raises(ValueError, match="no AR variant"):
            write(fmt, tmp_path, model, params, ema_params)
        return
    path = write(fmt, tmp_path, model, params, ema_params)
    sd, meta = load_any(path, model)
    assert meta["format"] == fmt.replace("_ema", "") and meta["path"] == os.fspath(path)
    expected = ema_params if fmt == "lightning_ema" else params
    assert meta["weights"] == ("ema" if fmt == "lightning_ema" else "raw")
    assert_trees_equal(params_from_torch(sd, model), expected)
    if fmt == "lightning_ema":
        raw, raw_meta = load_any(path, model, prefer_ema=False)
        assert raw_meta["weights"] == "raw"
        assert_trees_equal(params_from_torch(raw, model), params)
        no_config, _ = load_any(path)  # EMA names from the state_dict order
        assert_trees_equal(params_from_torch(no_config, model), ema_params)
        assert meta["ema_num_updates"] == meta["global_step"] == 7


def test_lightning_layout_is_plain_and_official(setup, tmp_path):
    model, params, ema_params = setup
    path = write("lightning_ema", tmp_path, model, params, ema_params)
    ckpt = torch.load(path, weights_only=True)  # plain containers and tensors only
    names = torch_param_names(model)
    assert list(ckpt["state_dict"]) == ["backbone." + k for k in params_to_torch(params, model)]
    assert "backbone.rotary_emb.inv_freq" in ckpt["state_dict"]
    assert ckpt["ema"]["decay"] == 0.9999 and len(ckpt["ema"]["shadow_params"]) == len(names)
    assert ckpt["global_step"] == 7 and ckpt["pytorch-lightning_version"]
    fit = ckpt["loops"]["fit_loop"]  # what the official on_load_checkpoint reads
    assert fit["epoch_progress"]["current"]["completed"] == 0
    assert fit["epoch_loop.batch_progress"]["current"]["completed"] == 7


@pytest.mark.parametrize("name", FIXTURES)
def test_lightning_ema_order_matches_official(fixtures_dir, tmp_path, name):
    z, model, sd = golden(fixtures_dir, name)
    ema_sd = {k: v + np.float32(i + 1) for i, (k, v) in enumerate(sd.items())  # all distinct
              if k != "rotary_emb.inv_freq"}  # a buffer, not tracked by the EMA
    save_lightning(tmp_path / "x.ckpt", sd, model, ema_sd=ema_sd)
    shadow = torch.load(tmp_path / "x.ckpt", weights_only=True)["ema"]["shadow_params"]
    names = [str(k) for k in z["ema_param_names"]]
    assert len(shadow) == len(names)
    for name_, tensor in zip(names, shadow):
        np.testing.assert_array_equal(tensor.numpy(), ema_sd[name_], err_msg=name_)


def test_hf_layout(tmp_path):
    model = DiT(**SMALL, time_conditioning=True, dropout=0.0)
    params = random_params(model)
    save_hf(tmp_path, params_to_torch(params, model), model, vocab_size=50, mask_id=49, length=128)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "mdlm" and config["model_length"] == 128
    assert (config["hidden_dim"], config["cond_dim"], config["n_blocks"], config["n_heads"]) == (64, 32, 2, 2)
    assert config["vocab_size"] == 50 and config["mask_token_id"] == 49 and config["time_conditioning"]
    rebuilt = DiT(**model_config_from_hf(config))
    assert rebuilt == model.clone(parent=None)
    with safe_open(tmp_path / "model.safetensors", framework="np") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
    assert keys == {"backbone." + k for k in params_to_torch(params, model)}
    _, meta = load_any(tmp_path)
    assert meta["hf_config"] == config and meta["model_config"]["hidden_size"] == 64


def test_bare_safetensors_file(tmp_path):
    model = DiT(**SMALL)
    params = random_params(model)
    save_hf(tmp_path, params_to_torch(params, model), model, vocab_size=50, mask_id=49, length=16)
    sd, meta = load_any(tmp_path / "model.safetensors")
    assert meta["format"] == "safetensors"
    assert_trees_equal(params_from_torch(sd, model), params)


def write_torch_module(fmt, path, module, model):
    """Saves a torch DiT's own state_dict (its dtype as is) the way each format stores it."""
    sd = module.state_dict()
    if fmt == "state_dict":
        torch.save(sd, path / "model.pt")
        return path / "model.pt"
    if fmt == "lightning":  # what Lightning writes for a module trained in bf16: tensors as they are
        shadow = [p.detach().clone() for p in module.parameters()]
        torch.save({"state_dict": {f"backbone.{k}": v for k, v in sd.items()}, "global_step": 0,
                    "ema": {"decay": 0.9999, "num_updates": 0, "shadow_params": shadow}}, path / "last.ckpt")
        return path / "last.ckpt"
    if fmt == "safetensors":
        save_torch_safetensors({k: v.contiguous() for k, v in sd.items()}, path / "model.safetensors")
        return path / "model.safetensors"
    (path / "hf").mkdir()
    save_torch_safetensors({f"backbone.{k}": v.contiguous() for k, v in sd.items()}, path / "hf" / "model.safetensors",
                           metadata={"format": "pt"})
    config = hf_config(model, vocab_size=model.vocab_size, mask_id=model.vocab_size - 1, length=16)
    (path / "hf" / "config.json").write_text(json.dumps(config))
    return path / "hf"


@pytest.mark.parametrize("fmt", ["state_dict", "lightning", "safetensors", "hf"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_precision_module_loads_in_every_format(tmp_path, fmt, dtype):
    model = DiT(**SMALL)
    module = torch_model(model, params_to_torch(random_params(model, 5), model)).to(dtype)
    inv_freq = module.rotary_emb.inv_freq
    assert inv_freq.dtype == dtype  # .to() casts the rotary buffer too
    # the case at hand: the half table is off the float32 one by more than float32 rounding
    assert not np.allclose(inv_freq.float().numpy(), rotary_inv_freq(32), rtol=1e-5)
    sd, _ = load_any(write_torch_module(fmt, tmp_path, module, model), model)
    assert str(sd["rotary_emb.inv_freq"].dtype) == str(dtype).removeprefix("torch.")  # read as stored
    weights = {k: v.float() for k, v in module.state_dict().items() if k != "rotary_emb.inv_freq"}
    assert_trees_equal(params_from_torch(sd, model), params_from_torch(weights, model))  # half -> float32 is exact


def test_rotary_table_of_another_base_is_refused():
    model = DiT(**SMALL)
    sd = params_to_torch(random_params(model), model)
    other = torch.from_numpy(1.0 / 500000 ** (np.arange(0, 32, 2, dtype=np.float32) / 32))
    with pytest.raises(ValueError, match=r"rotary_emb.inv_freq \(bfloat16\) does not match .* another rotary base"):
        params_from_torch(dict(sd, **{"rotary_emb.inv_freq": other.to(torch.bfloat16)}), model)


# ------------------------------------------------------------------------------------------ errors


def test_missing_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_any(tmp_path / "nope.ckpt")
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"Unknown checkpoint format for .*weights\.txt.*\.safetensors"):
        load_any(tmp_path / "weights.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without model.safetensors"):
        load_any(tmp_path / "empty")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="neither a Lightning checkpoint"):
        load_any(tmp_path / "list.pt")


@pytest.mark.parametrize("fmt", ["state_dict", "lightning_ema", "hf"])
def test_truncated_files(tmp_path, fmt):
    model = DiT(**SMALL)
    params = random_params(model)
    path = write(fmt, tmp_path, model, params, params)
    target = path / "model.safetensors" if fmt == "hf" else path
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{target.name}.*corrupt or truncated"):
        load_any(path, model)


def test_ema_length_mismatch(tmp_path):
    model = DiT(**SMALL)
    params = random_params(model)
    sd = params_to_torch(params, model)
    save_lightning(tmp_path / "x.ckpt", sd, model, ema_sd=sd)
    ckpt = torch.load(tmp_path / "x.ckpt", weights_only=True)
    ckpt["ema"]["shadow_params"].pop()
    torch.save(ckpt, tmp_path / "short.ckpt")
    n = len(torch_param_names(model))
    with pytest.raises(ValueError, match=f"short.ckpt: the EMA holds {n - 1} tensors but the model has {n}"):
        load_any(tmp_path / "short.ckpt", model)
    wrong = DiT(**{**SMALL, "n_blocks": 3})
    n_wrong = len(torch_param_names(wrong))
    with pytest.raises(ValueError, match=f"EMA holds {n} tensors but the model has {n_wrong}"):
        load_any(tmp_path / "x.ckpt", wrong)


def test_head_count_mismatch_names_the_fix():
    sd = params_to_torch(random_params(DiT(**SMALL)), DiT(**SMALL))  # 2 heads of 32
    message = (r"rotary_emb.inv_freq has shape \(16,\) but the model config \(hidden_size 64, n_heads 4\) expects "
               r"\(8,\): the checkpoint has head_dim 32, i.e. n_heads=2 at hidden_size 64: set n_heads=2 in the "
               r"model config \(--config.model.n_heads=2\)")
    with pytest.raises(ValueError, match=message):
        params_from_torch(sd, DiT(**{**SMALL, "n_heads": 4}))
    with pytest.raises(ValueError, match=r"no head count splits hidden_size 64 into that head_dim"):
        params_from_torch(dict(sd, **{"rotary_emb.inv_freq": rotary_inv_freq(48)}), DiT(**SMALL))


WIDER = {**SMALL, "hidden_size": 96, "n_heads": 3}


@pytest.mark.parametrize("name,shape,message", [
    ("blocks.0.attn_qkv.weight", None,
     r"blocks.0.attn_qkv.weight has shape \(288, 96\) but the model config expects \(192, 64\): the checkpoint's "
     r"hidden size is 96 \(vocab_embed.embedding is \(50, 96\)\): set hidden_size=96 in the model config "
     r"\(--config.model.hidden_size=96\)"),
    ("blocks.1.attn_qkv.weight", (192, 32),
     r"blocks.1.attn_qkv.weight has shape \(192, 32\) but the model config expects \(192, 64\): the rest of the "
     r"checkpoint fits hidden_size 64, so this tensor is corrupt or from another architecture"),
    ("blocks.1.attn_out.weight", (64, 32),
     r"blocks.1.attn_out.weight has shape \(64, 32\) but the model config expects \(64, 64\): the rest"),
], ids=["wider_checkpoint", "qkv", "out"])
def test_misshaped_attention_weights_name_the_parameter(name, shape, message):
    model = DiT(**SMALL)
    if shape is None:  # a whole checkpoint of another width
        sd = params_to_torch(random_params(DiT(**WIDER)), DiT(**WIDER))
    else:
        sd = dict(params_to_torch(random_params(model), model), **{name: np.zeros(shape, np.float32)})
    with pytest.raises(ValueError, match=message):
        params_from_torch(sd, model)


class _RunsCommand:
    """A pickle that calls ``func(*args)`` on load: what a hostile checkpoint holds."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_untrusted_pickle_needs_opt_in(tmp_path):
    torch.save({"state_dict": {"backbone.x": torch.ones(2)}, "extra": fractions.Fraction(1, 3)},
               tmp_path / "odd.ckpt")
    with pytest.raises(ValueError, match=r"odd.ckpt pickles .*\(fractions.Fraction\).*weights_only=False"):
        load_any(tmp_path / "odd.ckpt")
    sd, _ = load_any(tmp_path / "odd.ckpt", weights_only=False)
    np.testing.assert_array_equal(sd["x"], np.ones(2, np.float32))


HOSTILE = {
    "os.system": lambda marker: _RunsCommand(os.system, f"touch {marker}"),
    "eval": lambda marker: _RunsCommand(eval, f"open({marker!r}, 'w')"),
    "subprocess": lambda marker: _RunsCommand(subprocess.call, ["touch", marker]),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_code_in_a_pickle_is_refused_and_never_run(tmp_path, kind):
    """Also beside a name that loads as a stand-in (typing.Any, as in omegaconf metadata)."""
    marker = str(tmp_path / "ran")
    torch.save({"state_dict": {"backbone.x": torch.ones(2)}, "hyper_parameters": {"ref_type": typing.Any},
                "callbacks": HOSTILE[kind](marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="weights_only=False"):
        load_any(tmp_path / "evil.ckpt")
    assert not os.path.exists(marker)


def test_writers_validate_against_the_config(tmp_path):
    model = DiT(**SMALL)
    sd = params_to_torch(random_params(model), model)
    with pytest.raises(ValueError, match="missing keys"):
        save_lightning(tmp_path / "x.ckpt", {k: v for k, v in sd.items() if "mlp.0" not in k}, model)
    with pytest.raises(ValueError, match="vocab_size 51 does not match"):
        save_hf(tmp_path / "hf", sd, model, vocab_size=51, mask_id=50, length=16)


def test_package_works_without_torch(tmp_path):
    """Import and safetensors I/O never touch torch; .pt files fail with a clear ImportError."""
    model = DiT(**SMALL)
    save_hf(tmp_path / "hf", params_to_torch(random_params(model), model), model, vocab_size=50,
            mask_id=49, length=16)
    (tmp_path / "x.pt").write_bytes(b"")
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from mdlm_jax.interop import load_any\n"
        f"sd, meta = load_any({str(tmp_path / 'hf')!r}); assert meta['format'] == 'hf', meta\n"
        "try:\n"
        f"    load_any({str(tmp_path / 'x.pt')!r})\n"
        "except ImportError as err:\n"
        "    assert 'needs PyTorch' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('expected ImportError')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
