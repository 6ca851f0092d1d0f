"""``python -m mdlm_jax.data``: prepare a paper dataset's token cache, in shards if wanted, and merge.

    python -m mdlm_jax.data prepare --dataset owt --source /data/openwebtext --out /data/cache \\
        --tokenizer-path /models/gpt2 [--shard I --num-shards N]
    python -m mdlm_jax.data merge --dataset owt --out /data/cache --tokenizer-path /models/gpt2

``prepare`` tokenizes every part of the dataset found under ``--source`` (or the given
``--part``s) into ``--out``, which training then reads as ``data.cache_dir``. With ``--num-shards
N`` it processes only its slice of the source (shard I of N, contiguous), so N processes or hosts
can run at once; ``merge`` (or the first training run) joins complete shards in order, giving the
same cache as one process. Statistics (documents, tokens, blocks, dropped remainder, tokens/s)
are printed per part and per split.
"""

from __future__ import annotations

import argparse
import json
import sys

from mdlm_jax.config import default_config
from mdlm_jax.data import cache, pipeline
from mdlm_jax.data.datasets import PaperDataset, select
from mdlm_jax.data.packing import make_blocks
from mdlm_jax.data.registry import DATASETS, DatasetNotFoundError

# What can be prepared ahead: the paper datasets (the others are cached on first use).
PAPER_DATASETS = {name: d for name, d in DATASETS.items() if isinstance(d, PaperDataset)}


def _data_config(args) -> object:
    dataset = PAPER_DATASETS[args.dataset]
    cfg = default_config().data
    cfg.update(source=dataset.name, path=getattr(args, "source", "") or "", cache_dir=args.out,
               tfds_data_dir=getattr(args, "tfds_data_dir", "") or "",
               tokenizer=args.tokenizer or dataset.tokenizer, tokenizer_path=args.tokenizer_path or "",
               allow_download=args.allow_download, detokenizer=args.detokenizer or "",
               seq_len=args.seq_len or dataset.seq_len, packing=args.packing or dataset.packing,
               owt_val_documents=args.owt_val_documents, jsonl_field=args.jsonl_field)
    return cfg


def _split_stats(cfg, part: str, tokenizer) -> dict:
    """Blocks and dropped tokens of every split cut from ``part`` under the configured packing."""
    dataset = PAPER_DATASETS[cfg.source]
    arrays = cache.open_part(dataset.part_directory(cfg, tokenizer, part))
    out = {}
    for split, selection in dataset.selections(cfg).items():
        if selection.part != part:
            continue
        try:
            tokens, offsets = select(arrays.tokens, arrays.offsets, selection)
        except ValueError as e:
            out[split] = {"error": str(e)}
            continue
        blocks = make_blocks(tokens, offsets, seq_len=cfg.seq_len, packing=cfg.packing, tokenizer=tokenizer)
        out[split] = blocks.stats()
    return out


def _print_part(part: str, meta: dict, splits: dict) -> None:
    keys = ("documents", "tokens", "empty_documents", "invalid_utf8_documents", "seconds", "tokens_per_second")
    summary = ", ".join(f"{k}={meta[k]}" for k in keys if k in meta)
    shard = f" shard {meta['shard']} of {meta['num_shards']}" if meta.get("num_shards", 1) > 1 else ""
    print(f"{meta['dataset']}/{part}{shard}: {summary}")
    for split, stats in splits.items():
        print(f"  split {split}: " + ", ".join(f"{k}={v}" for k, v in stats.items()))


def _parts(cfg, requested) -> list[str]:
    return list(requested) if requested else sorted(PAPER_DATASETS[cfg.source].locate(cfg).parts)


def prepare(args) -> dict:
    cfg = _data_config(args)
    tokenizer = pipeline.tokenizer_for(cfg)
    report = {}
    for part in _parts(cfg, args.part):
        meta = pipeline.prepare_part(cfg, part, tokenizer=tokenizer, shard=args.shard, num_shards=args.num_shards,
                                     progress=not args.no_progress)
        complete = meta.get("num_shards", 1) == 1
        splits = _split_stats(cfg, part, tokenizer) if complete else {}
        _print_part(part, meta, splits)
        if not complete:
            print(f"  run `python -m mdlm_jax.data merge --dataset {cfg.source} --out {args.out}` once all "
                  f"{args.num_shards} shards are done (training also merges complete shards).")
        report[part] = dict(meta=meta, splits=splits)
    return report


def merge(args) -> dict:
    cfg = _data_config(args)
    tokenizer = pipeline.tokenizer_for(cfg)
    dataset = PAPER_DATASETS[cfg.source]
    detok = dataset.detokenizer_for(cfg)
    parts = args.part or sorted({s.part for s in dataset.selections(cfg).values()})
    report = {}
    for part in parts:
        directory = dataset.part_directory(cfg, tokenizer, part)
        built = cache.load_dir(directory)
        if built is not None:
            meta = built.meta
        elif cache.shard_status(directory)[0]:
            meta = cache.merge_shards(directory)
        else:
            if args.part:
                raise ValueError(f"No cache or shards for {dataset.name}/{part} under {args.out}.")
            continue
        splits = _split_stats(cfg, part, tokenizer)
        _print_part(part, meta, splits)
        report[part] = dict(meta=meta, splits=splits)
    if not report:
        raise ValueError(f"Nothing to merge for {dataset.name} (tokenizer {tokenizer.name}, detokenizer {detok}) "
                         f"under {args.out}.")
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mdlm_jax.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("prepare", "tokenize a dataset (or one shard of it) into the cache"),
                        ("merge", "join complete shards into the cache")):
        p = commands.add_parser(name, help=help_)
        p.add_argument("--dataset", required=True, choices=sorted(PAPER_DATASETS))
        p.add_argument("--out", required=True, help="the cache directory (data.cache_dir)")
        p.add_argument("--tokenizer", default="", help="default: the paper's for the dataset")
        p.add_argument("--tokenizer-path", default="", help="directory of the tokenizer's vocabulary files")
        p.add_argument("--allow-download", action="store_true", help="fetch missing tokenizer files / datasets")
        p.add_argument("--detokenizer", default="", help="default: the dataset's official detokenizer")
        p.add_argument("--part", action="append", default=[], help="only this part (repeatable)")
        p.add_argument("--seq-len", type=int, default=0, help="for the block statistics; default the paper's")
        p.add_argument("--packing", default="", help="for the block statistics; default the paper's")
        p.add_argument("--owt-val-documents", type=int, default=100_000)
        p.add_argument("--jsonl-field", default="text")
        p.add_argument("--json", action="store_true", help="also print the report as one JSON line")
        if name == "prepare":
            p.add_argument("--source", default="", help="the local copy (data.path); default: tfds, then the HF caches")
            p.add_argument("--tfds-data-dir", default="",
                           help="a TensorFlow Datasets dir with an ArrayRecord copy (data.tfds_data_dir); "
                                "default $TFDS_DATA_DIR or ~/tensorflow_datasets")
            p.add_argument("--shard", type=int, default=0)
            p.add_argument("--num-shards", type=int, default=1)
            p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = prepare(args) if args.command == "prepare" else merge(args)
    except (FileNotFoundError, ValueError) as e:
        hint = (" (here: pass the local copy as --source DIR, or a TensorFlow Datasets dir as --tfds-data-dir DIR)"
                if isinstance(e, DatasetNotFoundError) else "")
        print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, default=str))
    return 0
