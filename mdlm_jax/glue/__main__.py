"""GLUE with the paper's Table 4 recipe, from a Hugging Face BERT directory (bert-base-uncased, or a
BERT fine-tuned with MDLM and exported by ``python -m mdlm_jax.interop export --format hf-bert``):

    python -m mdlm_jax.glue --init DIR --data GLUE_DIR --tasks all --out OUT [--name 'BERT + MDLM-FT']

GLUE_DIR holds the GLUE distribution's TSV folders (CoLA/, SST-2/, ..., MNLI/) or the Hugging Face
``nyu-mll/glue`` parquet folders (cola/, sst2/, ...). Writes OUT/glue.json (every task's metrics and
the Table 4 row) and prints the row in the layout of Table 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

import jax
from absl import logging as absl_logging

from mdlm_jax import config as config_lib, data, parallel
from mdlm_jax.glue import finetune, metrics, tasks as tasks_lib
from mdlm_jax.interop import hf_bert

def parse_tasks(value: str) -> list[str]:
    names = list(tasks_lib.TASKS) if value == "all" else [t.strip().lower() for t in value.split(",") if t.strip()]
    for name in names:
        tasks_lib.get_task(name)  # names an unknown task (and WNLI's exclusion)
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdlm_jax.glue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", required=True, help="a Hugging Face BERT directory (config.json + weights)")
    parser.add_argument("--data", required=True, help="the GLUE root (TSV or nyu-mll/glue parquet layout)")
    parser.add_argument("--tasks", default="all", help="'all' (the 8 of Table 4) or a list: cola,sst2,...")
    parser.add_argument("--out", required=True, help="where glue.json goes")
    parser.add_argument("--name", default="", help="the row label in the printed table (default: --init)")
    parser.add_argument("--tokenizer", default="", help="vocab.txt / tokenizer.json directory (default: --init "
                        "if it has one, else bert-base-uncased from the local HF cache)")
    recipe = finetune.Recipe()
    for field in dataclasses.fields(finetune.Recipe):
        parser.add_argument(f"--{field.name}", type=type(getattr(recipe, field.name)),
                            default=getattr(recipe, field.name))
    parser.add_argument("--max_train_examples", type=int, default=-1, help="> 0: the first N (quick runs)")
    parser.add_argument("--max_eval_examples", type=int, default=-1, help="> 0: the first N (quick runs)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        names = parse_tasks(args.tasks)
        recipe = finetune.Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(finetune.Recipe)})
        # every task's files are read (and checked) before the first compile
        splits = {n: {s: tasks_lib.read_split(args.data, n, s) for s in tasks_lib.get_task(n).splits} for n in names}
        config, params, info = hf_bert.load_hf_bert(args.init)
        pooler = hf_bert.read_pooler(args.init)
        tok_dir = args.tokenizer or (args.init if any(os.path.isfile(os.path.join(args.init, f))
                                                      for f in hf_bert.TOKENIZER_FILES[:2]) else "")
        tokenizer = data.get_tokenizer("bert-base-uncased", path=tok_dir)
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(f"The tokenizer has {tokenizer.vocab_size} entries but the BERT at {args.init} has "
                             f"vocab_size {config.vocab_size}: pass --tokenizer with the model's vocabulary.")
        mesh = parallel.make_mesh(config_lib.default_config().mesh)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    logging.info("GLUE from %s (%s; pooler %s), tasks %s, %s", args.init, info["architecture"],
                 "from the checkpoint" if pooler else "initialised", names, recipe)
    results = {}
    for name in names:
        results[name] = finetune.run_task(name, splits[name], config=config, encoder_params=params,
                                          pooler=pooler, tokenizer=tokenizer, recipe=recipe, mesh=mesh,
                                          max_train_examples=args.max_train_examples,
                                          max_eval_examples=args.max_eval_examples)
    row = metrics.table4_row({n: {s: r[s] for s in tasks_lib.get_task(n).eval_splits} for n, r in results.items()})
    if jax.process_index() == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "glue.json"), "w") as f:
            json.dump(dict(init=args.init, recipe=dataclasses.asdict(recipe), tasks=results, table4=row), f, indent=2)
        print(metrics.format_table({args.name or args.init: row}), flush=True)
        print(f"Wrote {os.path.join(args.out, 'glue.json')}")
    return 0


if __name__ == "__main__":
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    sys.exit(main())
