"""The paper's comparisons in miniature: train every variant on the same data, tokens and seed, evaluate
each with the same estimator, print the rows in the layout of Tables 1 and 8, and plot the curves.

    python -m mdlm_jax.tools.compare --config=configs/quickstart.py --workdir=/tmp/compare \
        --variants=ar,mdlm,mdlm_t1000,no_carry_over,no_zero_masking,sedd,d3pm [--num_t=4] [--config.a.b=v]

Each variant is the ``--config`` experiment with only its objective changed (``VARIANTS``); all train
``train.steps`` steps of ``train.batch_size`` x ``data.seq_len`` tokens (the paper compares models
at equal training tokens), on whatever devices are found, into ``WORKDIR/<variant>`` (a finished
variant is not retrained). Every variant is then evaluated on the same validation blocks with
``--num_t`` time samples per sequence (the AR baseline: its exact NLL), giving the bound with its
standard error; ``WORKDIR/compare.json`` holds the numbers, ``WORKDIR/curves.png`` the validation
curves (NELBO per token against step, from the ``bound`` evaluator's periods).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time

import jax
from absl import logging as absl_logging
from etils import epath

from mdlm_jax import checkpoint, config as config_lib, evals, experiment
from mdlm_jax.evals import evaluate
from mdlm_jax.training import task as task_lib, train

# The objective fields each variant changes; everything else is the --config experiment's.
VARIANTS = {
    "ar": dict(diffusion=dict(parameterization="ar")),
    "mdlm": dict(),
    "mdlm_t1000": dict(diffusion=dict(num_steps=1000)),
    "no_carry_over": dict(diffusion=dict(parameterization="d3pm", num_steps=1000, subs_masking=True),
                          sample=dict(predictor="ddpm")),
    "no_zero_masking": dict(diffusion=dict(parameterization="d3pm", num_steps=1000, subs_masking=False),
                            sample=dict(predictor="ddpm")),
    "sedd": dict(diffusion=dict(parameterization="sedd"), model=dict(time_conditioning=True),
                 sample=dict(predictor="analytic")),
    "d3pm": dict(diffusion=dict(parameterization="d3pm", num_steps=1000, subs_masking=False),
                 model=dict(time_conditioning=True), sample=dict(predictor="ddpm")),
}

# (tables, row label, the paper's LM1B number (PPL; <= for bounds)).
ROWS = {
    "ar": (("Table 1",), "Autoregressive (Transformer)", 22.32),
    "sedd": (("Table 1",), "SEDD (absorbing)", 32.79),
    "d3pm": (("Table 1",), "D3PM (absorbing)", 76.90),
    "mdlm": (("Table 1", "Table 8"), "MDLM", 27.04),
    "mdlm_t1000": (("Table 8",), "  w/o continuous time (T = 1000)", 27.19),
    "no_carry_over": (("Table 8",), "  & w/o carry-over", 28.56),
    "no_zero_masking": (("Table 8",), "  & w/o zero masking", 28.51),
}
# The paper's ordering, as (lower, higher) pairs.
ORDER = [("ar", "mdlm"), ("mdlm", "mdlm_t1000"), ("mdlm_t1000", "no_carry_over"),
         ("mdlm_t1000", "no_zero_masking"), ("mdlm", "sedd"), ("mdlm", "d3pm")]

CURVES: dict[str, list[tuple[int, float]]] = {}


@evals.register_evaluator("compare_bound")
class CurveBound(evaluate.Bound):
    """The validation bound, also recorded as (step, NELBO) for the curves."""

    def run(self, state, step, *, stop=None, writer=None):
        scalars = super().run(state, step, stop=stop, writer=writer)
        CURVES.setdefault(self.workdir, []).append((step, self.metrics["nelbo"]))
        return scalars


def variant_config(base, name: str):
    """``base`` with variant ``name``'s objective fields, evaluated by the curve-recording bound."""
    if name not in VARIANTS:
        raise ValueError(f"Unknown variant {name!r}; choose from {sorted(VARIANTS)}.")
    cfg = base.copy_and_resolve_references()
    with cfg.unlocked():
        for section, fields in VARIANTS[name].items():
            cfg[section].update(fields)
        cfg.evals.bound = dict(type="compare_bound", every=None)
    return cfg


def se_apart(a: dict, b: dict) -> float:
    """(NELBO_b - NELBO_a) / sqrt(SE_a^2 + SE_b^2): how many standard errors b lies above a."""
    return (b["nelbo"] - a["nelbo"]) / math.sqrt(a["nelbo_se"] ** 2 + b["nelbo_se"] ** 2)


def run_variant(cfg, workdir: str, num_t: int) -> dict:
    """Trains (or finds trained) one variant and evaluates its last checkpoint with ``num_t`` t per sequence."""
    config_lib.validate(cfg, "train")
    exp = experiment.build(cfg)
    start = time.perf_counter()
    done = False
    if checkpoint.has_checkpoint(workdir):
        ckpt = checkpoint.Checkpointer(workdir)
        done = ckpt.latest_step() == cfg.train.steps
        ckpt.close()
    curve_file = epath.Path(workdir) / "curve.json"
    if not done:
        train.train_and_evaluate(cfg, workdir, s=exp)
        if jax.process_index() == 0:
            curve_file.write_text(json.dumps(CURVES.get(workdir, [])))
    seconds = time.perf_counter() - start
    curve = [tuple(p) for p in json.loads(curve_file.read_text())] if curve_file.exists() else []
    with cfg.unlocked():
        cfg.eval.num_t = num_t
    exp = experiment.build(cfg, "eval")
    weights = checkpoint.restore_params(workdir, exp.abstract_state.params, use_ema=cfg.eval.use_ema)
    state = task_lib.Weights(params=None if cfg.eval.use_ema else weights,
                             ema_params=weights if cfg.eval.use_ema else None)
    metrics = evaluate.evaluate(exp, state, step=cfg.train.steps, name="final")
    # The paper counts training tokens as steps x batch x L for every model, AR included (whose loss
    # covers L - 1 of each block's L: the first token is context).
    train_tokens = cfg.train.steps * cfg.train.batch_size * cfg.data.seq_len
    return dict(metrics, train_seconds=seconds if not done else None, bound=exp.task.objective.bound, curve=curve,
                train_tokens=train_tokens)


def format_table(results: dict) -> str:
    """The rows in the layout of Tables 1 and 8, with this run's numbers beside the paper's."""
    counts = sorted({r["train_tokens"] for r in results.values() if "train_tokens" in r})
    lines = [f"Training tokens per variant: {', '.join(f'{n:,}' for n in counts)} (steps x batch x L, as the paper "
             "counts them; the AR loss covers L - 1 of each block's L)"] if counts else []
    lines.append(f"{'':<40} {'PPL (ours)':>16} {'+- 1 SE':>9} {'NELBO':>8} {'paper (LM1B)':>13}")
    for table in ("Table 1", "Table 8"):
        lines.append(f"{table}")
        for name, (tables, label, paper) in ROWS.items():
            if name not in results or table not in tables:
                continue
            r = results[name]
            bound = "<=" if r["bound"] else "  "
            ppl_se = r["ppl"] * r["nelbo_se"]  # delta method: d exp(x) = exp(x) dx
            paper_cell = f"{'<=' if name != 'ar' else '  '} {paper:.2f}"
            lines.append(f"  {label:<38} {bound} {r['ppl']:>13.2f} {ppl_se:>9.2f} {r['nelbo']:>8.4f} {paper_cell:>13}")
    lines.append("The paper's ordering (b above a by how many standard errors):")
    for a, b in ORDER:
        if a in results and b in results:
            z = se_apart(results[a], results[b])
            lines.append(f"  {a} < {b}: {'holds' if z > 0 else 'does not hold'} ({z:+.1f} SE)")
    return "\n".join(lines)


def plot(results: dict, path) -> None:
    """Validation NELBO per token against step, one line per variant."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        if r["curve"]:
            steps, values = zip(*r["curve"])
            ax.plot(steps, values, marker="o", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation NELBO (nats / token; AR: NLL)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def compare(base, workdir: str, variants: list[str], *, num_t: int = 4) -> dict:
    """Runs every variant (see the module doc); returns {variant: metrics} and writes the JSON, the PNG."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown variants {unknown}; choose from {sorted(VARIANTS)}.")
    results = {}
    for name in variants:
        logging.info("compare: variant %s", name)
        results[name] = run_variant(variant_config(base, name), str(epath.Path(workdir) / name), num_t)
    if jax.process_index() == 0:
        out = epath.Path(workdir)
        (out / "compare.json").write_text(json.dumps(results, indent=2))
        plot(results, out / "curves.png")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdlm_jax.tools.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="configs/X.py[:quick]; --config.a.b=v overrides follow")
    parser.add_argument("--workdir", required=True, help="one sub-directory per variant, compare.json, curves.png")
    parser.add_argument("--variants", default="ar,mdlm,mdlm_t1000,no_carry_over,no_zero_masking,sedd,d3pm")
    parser.add_argument("--num_t", type=int, default=4, help="time samples per validation sequence")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        base = config_lib.load_file(args.config, rest)
        results = compare(base, args.workdir, [v for v in args.variants.split(",") if v], num_t=args.num_t)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if jax.process_index() == 0:
        print(format_table(results), flush=True)
        print(f"Wrote {epath.Path(args.workdir) / 'compare.json'} and {epath.Path(args.workdir) / 'curves.png'}")
    return 0


if __name__ == "__main__":
    absl_logging.set_verbosity(absl_logging.INFO)  # orbax's and absl's lines
    logging.getLogger().setLevel(logging.INFO)  # the training loop's progress lines
    sys.exit(main())
