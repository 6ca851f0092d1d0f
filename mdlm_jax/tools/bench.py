"""Benchmarks that print tables: train-step throughput / MFU / memory, and sampler speed / NFEs.

    python -m mdlm_jax.tools.bench train --size small --lengths 128,1024 --batch 8 [--vs-torch]
    python -m mdlm_jax.tools.bench train --remat none,block,dots_saveable --attention-impl xla,cudnn --loss-chunk 0,256
    python -m mdlm_jax.tools.bench train --scan-blocks false,true --fused-loss true,false
    python -m mdlm_jax.tools.bench sample --size small --lengths 128,1024 --num-steps 128,1000,10000
    python -m mdlm_jax.tools.bench matmul --dtype float32
    python -m mdlm_jax.tools.bench pod --devices 64,256 --sizes small,medium --meshes fsdp,fsdp_tensor

``--remat``, ``--attention-impl``, ``--loss-chunk``, ``--scan-blocks`` and ``--fused-loss`` take
comma-separated lists (``model.remat``, ``model.attention_impl``, where '' or 'default' is jax's
choice, ``model.loss_chunk``, ``model.scan_blocks`` and ``model.fused_loss``) and time every combination.
``step_temp_gib`` is the compiled step's scratch memory (activations kept for the backward pass
and temporaries), the number remat changes; ``peak_mem_gib`` is the device's peak so far in this
process, so it never goes down between rows. MFU divides by the device's peak from
``mdlm_jax/training/flops.py`` or ``--peak-tflops``; ``matmul`` measures what one large matmul reaches, a
practical peak for devices the table does not list (CPUs).

Each row is printed as soon as it is measured (a run cut short keeps what it measured), and the
table of all rows at the end.

``pod`` compiles (never runs) the train step on N fake CPU devices and prints per-device parameter,
optimizer + EMA and temporary memory beside a perfect 1 / N split, and the collectives per step
(``pod_check.py``).

Random weights (speed does not depend on them). Timings exclude compilation, which is reported
separately; every timed call is synchronised with ``block_until_ready``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from mdlm_jax import config as config_lib, parallel
from mdlm_jax.tools import pod_check
from mdlm_jax.training import flops, optim, task as task_lib
from mdlm_jax.diffusion import sampling
from mdlm_jax.diffusion.schedules import get_schedule
from mdlm_jax.models import DiT

GPT2_VOCAB = 50258  # GPT-2 plus the appended mask token


def _timed(fn, *args, repeats: int):
    """(compile seconds, mean seconds per call, last output) of a jitted ``fn``; compiled ahead
    so that a whole sampler is not run once just to compile it."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(compiled(*args))
    return compile_s, (time.perf_counter() - start) / repeats, out


def _peak_memory_gib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _temp_memory_gib(compiled) -> float | None:
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):  # not every backend reports it
        return None
    temp = getattr(stats, "temp_size_in_bytes", None)
    return None if temp is None else temp / 2**30


def bench_train(size: str, length: int, batch: int, dtype: str, steps: int, vocab: int, remat: str = "none",
                attention_impl: str = "", loss_chunk: int = 0, scan_blocks: bool = False,
                peak_tflops: float = 0.0, fused_loss: bool = True) -> dict:
    cfg = config_lib.default_config()
    config_lib.set_model_size(cfg, size)
    cfg.model.update(dtype=dtype, remat=remat, attention_impl=attention_impl, loss_chunk=loss_chunk,
                     scan_blocks=scan_blocks, fused_loss=fused_loss)
    cfg.train.batch_size = batch
    cfg.mesh.update(data=-1, fsdp=1, tensor=1)
    mesh = parallel.make_mesh(cfg.mesh)
    parallel.check_batch_size(batch, mesh)
    task = task_lib.make_task(cfg, vocab, vocab - 1)
    optimizer = optim.make_optimizer(cfg.optim)
    _, shardings = task_lib.state_shardings(task, optimizer, mesh, length)
    state = task_lib.init_state(task, optimizer, mesh, shardings, 0, length)
    step = task_lib.make_train_step(task, optimizer, mesh, shardings)
    rng = np.random.default_rng(0)
    batch_np = {"input_ids": rng.integers(0, vocab - 1, (batch, length)).astype(np.int32),
                "attention_mask": np.ones((batch, length), np.float32)}
    with jax.set_mesh(mesh):
        data = parallel.make_global_batch(batch_np, parallel.batch_sharding(mesh))
        start = time.perf_counter()
        step = step.lower(state, data).compile()
        state, _ = jax.block_until_ready(step(state, data))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, data)
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / steps
    tokens_per_s = batch * length / seconds
    flop_per_token = flops.train_flops_per_token(n_blocks=task.model.n_blocks, hidden_size=task.model.hidden_size,
                                                 mlp_ratio=task.model.mlp_ratio, vocab_size=vocab, seq_len=length)
    peak = flops.total_peak_flops(peak_tflops)
    return dict(size=size, L=length, batch=batch, dtype=dtype, remat=remat, attention=attention_impl or "default",
                loss_chunk=loss_chunk, scan=scan_blocks, fused=fused_loss, tokens_per_s=tokens_per_s,
                gflop_per_token=flop_per_token / 1e9,
                mfu=None if peak is None else tokens_per_s * flop_per_token / peak,
                step_temp_gib=_temp_memory_gib(step), peak_mem_gib=_peak_memory_gib(), compile_s=compile_s)


def bench_torch_train(size: str, length: int, batch: int, steps: int, vocab: int, dtype: str = "bfloat16") -> float:
    """Tokens/s of the project's PyTorch DiT (SDPA) at the same batch and compute dtype: bfloat16
    autocast where ``dtype`` is bfloat16 (on CUDA and on CPUs alike), float32 otherwise. Each step
    is the official recipe's, as the JAX step: clipping, AdamW and the EMA of the weights (decay
    0.9999 with its warmup, ``optim.ema_update``; here with PyTorch's fused foreach kernels)."""
    import torch

    from mdlm_jax.interop.torch_dit import DiT as TorchDiT

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TorchDiT(vocab_size=vocab, cond_dim=128, **config_lib.MODEL_SIZES[size]).to(device)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    weights = [p.detach() for p in params]  # views: the optimizer updates them in place
    ema = [w.clone() for w in weights]
    x = torch.randint(0, vocab - 1, (batch, length), device=device)
    sigma = torch.rand(batch, device=device)

    def step(n):  # n: this update's number, from 1
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            logits = model(x, sigma)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        decay = min(0.9999, (1 + n) / (10 + n))  # optim.ema_decay's rule, on the host: no JAX call in the step
        with torch.no_grad():
            torch._foreach_lerp_(ema, weights, 1.0 - decay)

    step(1)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for n in range(2, steps + 2):
        step(n)
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * length / ((time.perf_counter() - start) / steps)


def _sampler_model(size: str, vocab: int, dtype: str = "float32", attention_impl: str = "") -> DiT:
    return DiT(vocab_size=vocab, cond_dim=128, dropout=0.0, dtype=jnp.dtype(dtype),
               attention_impl=attention_impl or None, **config_lib.MODEL_SIZES[size])


@functools.lru_cache(maxsize=1)
def _random_params(size: str, vocab: int):
    """Random DiT params of a size, shared by every sampler row (their shapes depend on neither L,
    dtype nor the attention kernel); the output layer is random so that choices are not degenerate."""
    model = _sampler_model(size, vocab)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.zeros((1,)))["params"]
    params = jax.tree_util.tree_map(lambda p: getattr(p, "value", p), params, is_leaf=lambda p: hasattr(p, "value"))
    params["output_layer"]["linear"]["kernel"] = 0.02 * jax.random.normal(
        jax.random.key(1), params["output_layer"]["linear"]["kernel"].shape)
    return params


def bench_sample(size: str, length: int, batch: int, num_steps: int, predictor: str, dtype: str,
                 vocab: int, attention_impl: str = "") -> dict:
    model = _sampler_model(size, vocab, dtype, attention_impl)
    params = _random_params(size, vocab)
    denoise = lambda p: lambda x, s: model.apply({"params": p}, x, s)  # noqa: E731
    x_init = jnp.full((batch, length), vocab - 1, jnp.int32)
    if predictor == "first_hitting":
        fn = jax.jit(lambda p, k: sampling.sample_first_hitting(denoise(p), k, x_init, mask_id=vocab - 1))
    else:
        fn = jax.jit(lambda p, k: sampling.sample(denoise(p), k, x_init, schedule=get_schedule("loglinear"),
                                                  mask_id=vocab - 1, num_steps=num_steps, predictor=predictor))
    compile_s, seconds, out = _timed(fn, params, jax.random.key(2), repeats=1)
    return dict(size=size, L=length, T=num_steps if predictor != "first_hitting" else "-", predictor=predictor,
                attention=attention_impl or "default", batch=batch, nfe=int(out.nfe), samples_per_s=batch / seconds,
                tokens_per_s=batch * length / seconds, compile_s=compile_s)


def bench_matmul(n: int, dtype: str, repeats: int) -> dict:
    """FLOP/s of one (n, n) @ (n, n) matmul in ``dtype``: the rate the train step's matmuls could
    reach on this device at best, for ``--peak-tflops`` where the device table has no entry."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    fn = jax.jit(lambda x, y: x @ y)
    _, seconds, _ = _timed(fn, a, a, repeats=repeats)
    return dict(n=n, dtype=dtype, tflop_per_s=2 * n**3 / seconds / 1e12, ms_per_call=1e3 * seconds)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def print_row(row: dict) -> None:
    """One measured row at once (flushed), so that a run cut short keeps it."""
    print("measured: " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(_fmt(row[k]) for k in keys) + " |")


def _flag(value: str, option: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"{option} takes true / false values, got {value!r}.")
    return value.lower() in ("true", "1")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["train", "sample", "matmul", "pod"])
    parser.add_argument("--size", default="small", choices=sorted(config_lib.MODEL_SIZES))
    parser.add_argument("--lengths", default="128,1024")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--steps", type=int, default=10, help="timed train steps")
    parser.add_argument("--vocab", type=int, default=GPT2_VOCAB)
    parser.add_argument("--num-steps", default="128,1000,10000", help="sampler T values")
    parser.add_argument("--predictors", default="ddpm,ddpm_cache,first_hitting")
    parser.add_argument("--vs-torch", action="store_true", help="also time the PyTorch DiT (train)")
    parser.add_argument("--remat", default="none", help="model.remat values, comma-separated (train)")
    parser.add_argument("--attention-impl", default="",
                        help="model.attention_impl values, comma-separated; '' or 'default': jax's choice")
    parser.add_argument("--loss-chunk", default="0", help="model.loss_chunk values, comma-separated (train)")
    parser.add_argument("--scan-blocks", default="false", help="model.scan_blocks values: false, true or both (train)")
    parser.add_argument("--fused-loss", default="true", help="model.fused_loss values: true, false or both (train)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="peak TFLOP/s per device for MFU; 0: the table in mdlm_jax/training/flops.py (train)")
    parser.add_argument("--matmul-size", type=int, default=4096, help="n of the (n, n) matmul (matmul)")
    parser.add_argument("--devices", default="64,256", help="fake CPU device counts (pod)")
    parser.add_argument("--sizes", default="small,medium", help="model sizes (pod)")
    parser.add_argument("--meshes", default="fsdp,fsdp_tensor", help=f"of {sorted(pod_check.MESHES)} (pod)")
    parser.add_argument("--global-batch", type=int, default=512, help="the paper's global batch (pod)")
    parser.add_argument("--pod-length", type=int, default=1024, help="L (pod)")
    parser.add_argument("--pod-scan-blocks", default="true",
                        help="compile the blocks as one scan (pod; 'false' unrolls them: slow at 256 devices)")
    parser.add_argument("--vocab-multiple", type=int, default=None,
                        help="model.vocab_multiple (pod; default: the config's, 1: GPT-2's 50,258 rows unpadded)")
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    remats = args.remat.split(",")
    loss_chunks = [int(c) for c in args.loss_chunk.split(",")]
    scans = [_flag(v, "--scan-blocks") for v in args.scan_blocks.split(",")]
    fused_losses = [_flag(v, "--fused-loss") for v in args.fused_loss.split(",")]
    attention_impls = ["" if a == "default" else a for a in args.attention_impl.split(",")]
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}), "
          f"jax {jax.__version__}, python {platform.python_version()}")
    rows = []
    if args.what == "train":
        for length in lengths:
            torch_tokens_per_s = None
            for remat, attention_impl, chunk, scan, fused in itertools.product(remats, attention_impls, loss_chunks,
                                                                               scans, fused_losses):
                row = bench_train(args.size, length, args.batch, args.dtype, args.steps, args.vocab,
                                  remat, attention_impl, chunk, scan, args.peak_tflops, fused)
                if args.vs_torch:
                    if torch_tokens_per_s is None:
                        torch_tokens_per_s = bench_torch_train(args.size, length, args.batch, args.steps,
                                                               args.vocab, args.dtype)
                    row["torch_tokens_per_s"] = torch_tokens_per_s
                    row["jax_over_torch"] = row["tokens_per_s"] / torch_tokens_per_s
                print_row(row)
                rows.append(row)
    elif args.what == "matmul":
        rows.append(bench_matmul(args.matmul_size, args.dtype, args.steps))
    elif args.what == "pod":
        for devices in (int(d) for d in args.devices.split(",")):
            for row in pod_check.run_in_subprocess(devices, args.sizes.split(","), args.meshes.split(","),
                                                   batch=args.global_batch, seq_len=args.pod_length,
                                                   scan_blocks=_flag(args.pod_scan_blocks, "--pod-scan-blocks"),
                                                   vocab_multiple=args.vocab_multiple):
                print_row(row)
                rows.append(row)
    else:
        for length in lengths:
            for predictor in args.predictors.split(","):
                steps = [0] if predictor == "first_hitting" else [int(t) for t in args.num_steps.split(",")]
                for t in steps:
                    for attention_impl in attention_impls:
                        rows.append(bench_sample(args.size, length, args.batch, t, predictor, args.dtype,
                                                 args.vocab, attention_impl))
                        print_row(rows[-1])
    print_table(rows)


if __name__ == "__main__":
    main()
