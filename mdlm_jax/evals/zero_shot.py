"""Zero-shot evaluation (Sahoo et al., 2024, Table 3): one checkpoint's PPL bound on datasets it
was not trained on.

    python -m mdlm_jax.main --config=configs/owt_mdlm.py --workdir=DIR --mode=zero_shot \
        --config.data.tokenizer_path=/models/gpt2 \
        --config.eval.zero_shot_paths=ptb=/data/ptb,wikitext2=/data/wikitext-2-raw,lambada=/data/lambada

Every set in ``eval.zero_shot_sets`` is read with the model's tokenizer (``data.tokenizer``), its
official detokenizer (WikiText, PTB, LM1B, LAMBADA; AG News, PubMed and arXiv: WikiText then
LM1B) and the paper's split (LM1B, LAMBADA, AG News: test; the others: validation), documents
joined by EOS and wrapped to the model's length ``data.seq_len`` (1024), then evaluated by
``evaluate.evaluate`` exactly as the validation split is (EMA weights, ``eval.seed``,
``eval.num_t``, ``eval.max_batches``). A set's files come from its ``eval.zero_shot_paths`` entry
(``data.path`` for that set, in the dataset's public layout) or else the local Hugging Face
caches, and are tokenized once into ``data.cache_dir``. A set that cannot be found is reported
with the setting that fixes it and the others still run.

Output: the paper's table (rows: models; columns: datasets in the paper's order; ``<=`` marks an
upper bound), printed, and ``zero_shot.json`` in the workdir.
"""

from __future__ import annotations

import json
import logging
import math
import re

import jax
import ml_collections
from etils import epath

from mdlm_jax import data, parallel
from mdlm_jax.evals import evaluate, registry

# The paper's column order. WikiText-2 and WikiText-103 share their validation (and test) set, so
# both stand for the paper's single "WikiText" column.
PAPER_ORDER = ("ptb", "wikitext2", "wikitext103", "lm1b", "lambada", "ag_news", "pubmed", "arxiv")
COLUMN_TITLES = {"ptb": "PTB", "wikitext2": "WikiText-2", "wikitext103": "WikiText-103", "lm1b": "LM1B",
                 "lambada": "LAMBADA", "ag_news": "AG News", "pubmed": "PubMed", "arxiv": "ArXiv"}

# Table 3 of the paper (SPEC section 11): models trained on OpenWebText for 1M steps, PPL (AR)
# and PPL upper bounds (MDLM).
_PAPER = {
    "AR": (False, dict(ptb=82.05, wikitext=25.75, lm1b=51.25, lambada=51.28, ag_news=52.09, pubmed=49.01,
                       arxiv=41.73)),
    "MDLM": (True, dict(ptb=95.26, wikitext=32.83, lm1b=67.01, lambada=47.52, ag_news=61.15, pubmed=41.89,
                        arxiv=37.37)),
}


class NoZeroShotData(RuntimeError):
    """None of the requested zero-shot sets could be read."""


_PAPER_ROWS = {"subs": "MDLM", "ar": "AR"}  # objective -> the paper's row name


def paper_value(model: str, name: str) -> float | None:
    """The paper's Table 3 entry for ``model`` ('AR' or 'MDLM') on set ``name`` (None if absent)."""
    return _PAPER[model][1].get("wikitext" if name.startswith("wikitext") else name)


def requested_sets(sets) -> list[str]:
    """``eval.zero_shot_sets`` (a tuple, or a comma-separated string) validated and in the paper's
    column order (sets outside the paper's table follow in the order given)."""
    # '--config.eval.zero_shot_sets=ptb,lambada' arrives as the 1-tuple ('ptb,lambada',).
    names = [n.strip() for item in ([sets] if isinstance(sets, str) else sets) for n in str(item).split(",")
             if n.strip()]
    if not names:
        raise ValueError("eval.zero_shot_sets is empty; name some of " + ", ".join(PAPER_ORDER) + ".")
    for name in names:
        if name not in data.DATASETS:
            raise ValueError(f"Unknown zero-shot set {name!r} in eval.zero_shot_sets; the paper's are "
                             f"{', '.join(PAPER_ORDER)} (any of {sorted(data.DATASETS)} works).")
    names = list(dict.fromkeys(names))
    return [n for n in PAPER_ORDER if n in names] + [n for n in names if n not in PAPER_ORDER]


def parse_paths(spec) -> dict[str, str]:
    """``eval.zero_shot_paths``: 'name=path,name=path' (or a mapping) -> {name: path}."""
    if not spec:
        return {}
    if hasattr(spec, "items"):
        items = [(str(k), str(v)) for k, v in spec.items()]
    else:
        items = []
        for entry in str(spec).split(","):
            if not entry.strip():
                continue
            name, sep, path = entry.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"eval.zero_shot_paths entry {entry.strip()!r} is not NAME=PATH "
                                 "(e.g. 'ptb=/data/ptb,lambada=/data/lambada_test.jsonl').")
            items.append((name.strip(), path.strip()))
    out = {}
    for name, path in items:
        if name not in data.DATASETS:
            raise ValueError(f"eval.zero_shot_paths names an unknown set {name!r}; choose from "
                             f"{sorted(data.DATASETS)}.")
        out[name] = path
    return out


def data_config_for(data_config, name: str, path: str = "") -> ml_collections.ConfigDict:
    """The data config that reads zero-shot set ``name``: the model's tokenizer, length, caches and
    download permission; the set's own path, official detokenizer and split; wrapped."""
    d = ml_collections.ConfigDict(data_config.to_dict())
    d.update(source=name, path=path, files=(), detokenizer="", eval_split="", packing="wrap")
    return d


def _fix_flag(name: str) -> str:
    layout = getattr(data.DATASETS[name], "layout", "")  # a registered document dataset has none
    return f"--config.eval.zero_shot_paths={name}=/path/to/{re.split(r'[/ ]', layout)[0] or name}"


def _in_zero_shot_terms(message: str, name: str) -> str:
    # The data layer speaks of data.path; here that is the set's eval.zero_shot_paths entry.
    return (message.replace("--config.data.path=", f"--config.eval.zero_shot_paths={name}=")
            .replace("data.path", f"eval.zero_shot_paths[{name}]"))


def run(s, state, *, step: int | None = None, workdir: str | None = None, stop=None) -> dict:
    """Evaluates ``state`` on every set of ``eval.zero_shot_sets``; returns the results
    (``sets``: per set its status 'ok' with evaluate's metrics, or 'missing' / 'error' with the
    reason and the fix) with the printed ``report``, and writes ``workdir/zero_shot.json`` (process 0).

    Raises NoZeroShotData (after writing the JSON) when no set could be read. ``stop``: as in
    ``evaluate.evaluate`` (polled between batches).
    """
    objective = s.task.objective
    cfg = s.cfg
    names = requested_sets(cfg.eval.zero_shot_sets)
    paths = parse_paths(cfg.eval.zero_shot_paths)
    for name in sorted(set(paths) - set(names)):
        logging.warning("eval.zero_shot_paths has an entry for %r, which is not in eval.zero_shot_sets %s; "
                        "ignored.", name, names)
    sets = {}
    for name in names:
        dcfg = data_config_for(cfg.data, name, paths.get(name, ""))
        entry = dict(title=data.DATASETS[name].title, split=data.eval_split_for(dcfg),
                     path=paths.get(name, ""), seq_len=int(dcfg.seq_len), tokenizer=dcfg.tokenizer,
                     detokenizer=data.DATASETS[name].detokenizer)
        batches, status, reason = None, "ok", ""
        try:
            batches = data.make_eval_batches(dcfg, global_batch_size=cfg.eval.batch_size,
                                             process_index=jax.process_index(), process_count=jax.process_count())
        except data.DatasetNotFoundError as e:
            status, reason = "missing", _in_zero_shot_terms(str(e), name)
        except (ValueError, OSError) as e:
            status, reason = "error", f"{type(e).__name__}: {_in_zero_shot_terms(str(e), name)}"
        if not parallel.all_processes_ok(status == "ok"):
            status, reason = status if status != "ok" else "missing", reason or "not readable on every host"
        if status != "ok":
            fix = _fix_flag(name)
            logging.warning("zero-shot: %s (%s) is %s; fix with %s. %s", entry["title"], name, status, fix, reason)
            sets[name] = dict(entry, status=status, reason=reason, fix=fix)
            continue
        metrics = evaluate.evaluate(s, state, step=step, batches=batches, name=f"zero-shot {name}", stop=stop)
        sets[name] = dict(entry, status="ok", **metrics)
    result = dict(
        step=step, model=_PAPER_ROWS.get(objective.name, objective.name), bound=objective.bound, order=names,
        sets=sets, eval_seed=int(cfg.eval.seed), num_t=objective.eval_passes(),
        time_sampler=cfg.diffusion.time_sampler, num_steps=int(cfg.diffusion.num_steps),
        use_ema=bool(cfg.eval.use_ema), max_batches=int(cfg.eval.max_batches),
        paper={model: {n: paper_value(model, n) for n in names} for model in _PAPER})
    result["report"] = format_report(result)
    if workdir is not None and jax.process_index() == 0:
        path = epath.Path(workdir) / "zero_shot.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        logging.info("Wrote %s", path)
    if not any(v["status"] == "ok" for v in sets.values()):
        raise NoZeroShotData("No zero-shot set could be read:\n" + "\n".join(
            f"  {n}: {v['reason']}\n    fix: {v['fix']}" for n, v in sets.items()))
    return result


def _cell(ppl: float | None, bound: bool) -> str:
    if ppl is None:
        return ""
    return ("≤ " if bound else "") + f"{ppl:.2f}"


def format_table(result: dict) -> str:
    """The paper's Table 3 layout for ``run``'s result: the paper's AR and MDLM rows, then this
    checkpoint's; a set that could not be read shows as 'missing' (or 'error')."""
    names = result["order"]
    label = f"{result['model']} (this checkpoint" + (f", step {result['step']})" if result["step"] is not None
                                                     else ")")
    rows = [[f"{model} (paper, OWT 1M steps)"] + [_cell(paper_value(model, n), bound) for n in names]
            for model, (bound, _) in _PAPER.items()]
    ours = [label]
    for n in names:
        v = result["sets"][n]
        ours.append(_cell(v["ppl"], result["bound"]) if v["status"] == "ok" else v["status"])
    rows.append(ours)
    header = ["model"] + [COLUMN_TITLES.get(n, n) for n in names]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def format_report(result: dict) -> str:
    """The table, one detail line per evaluated set and one line per missing set naming its fix."""
    what = "PPL upper bound (NELBO)" if result["bound"] else "PPL"
    time = "continuous time" if not result["num_steps"] else f"T = {result['num_steps']}"
    head = (f"Zero-shot {what}, {'EMA' if result['use_ema'] else 'raw'} weights, eval seed {result['eval_seed']}"
            + ("" if not result["bound"] else f", {time}, {result['num_t']} {result['time_sampler']} t per sequence")
            + ("" if result["max_batches"] < 0 else f", first {result['max_batches']} batches of each set only")
            + ":")
    lines = [head, format_table(result), ""]
    for name in result["order"]:
        v = result["sets"][name]
        if v["status"] == "ok":
            lo, hi = math.exp(v["nelbo"] - v["nelbo_se"]), math.exp(v["nelbo"] + v["nelbo_se"])
            lines.append(f"{v['title']} ({name}): {v['split']} split, {v['sequences']} sequences of {v['seq_len']}, "
                         f"{v['tokens']:.0f} tokens; NELBO {v['nelbo']:.4f} +- {v['nelbo_se']:.4f} nats/token, "
                         f"PPL {v['ppl']:.2f} (1 SE: {lo:.2f} to {hi:.2f})")
    for name in result["order"]:
        v = result["sets"][name]
        if v["status"] != "ok":
            fix = "" if v["fix"].split("=/")[0] in v["reason"] else f" Fix: {v['fix']}."
            lines.append(f"{v['title']} ({name}) {v['status'].upper()}: {v['reason']}{fix}")
    return "\n".join(lines)


@registry.register_evaluator("zero_shot")
class ZeroShot(registry.Evaluator):
    """``eval.zero_shot_sets`` during training: ``eval/zero_shot/<set>/ppl`` for every readable set
    (a missing set is a warning, as in ``--mode=zero_shot``); the table goes to the log and
    ``workdir/zero_shot.json``."""

    def run(self, state, step, *, stop=None, writer=None):
        try:
            result = run(self.exp, state, step=step, workdir=self.workdir, stop=stop)
        except NoZeroShotData as e:
            logging.warning("%s", e)
            return {}
        if jax.process_index() == 0:
            logging.info("%s", result["report"])
        return {f"eval/{self.name}/{n}/{k}": v[k] for n, v in result["sets"].items() if v["status"] == "ok"
                for k in ("ppl", "nelbo")}
