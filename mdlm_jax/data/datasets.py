"""The paper's datasets, each found in local files in its usual public layout (or in the local
Hugging Face caches), with the official document rules, detokenizer and splits.

A dataset has *parts*, the pieces its files come in (LM1B: train and heldout files; OpenWebText:
one collection), and *splits*, the slices the experiments read: a whole part, a range of its
documents (OpenWebText's last 100,000), or a range of its tokens (text8's characters). Parts
are tokenized once into the cache (``cache.py``); splits are views over them.

Look-up order: ``data.path`` (a local copy in the public layout), then a TensorFlow Datasets copy
prepared in the ArrayRecord format under ``data.tfds_data_dir`` (``tfds_source``; LM1B, AG News,
PubMed, arXiv), then the Hugging Face caches, then a download. Nothing is downloaded
unless ``data.allow_download`` is set (text8 and LAMBADA have canonical URLs); a missing dataset
raises ``DatasetNotFoundError`` naming what was tried and the setting that fixes it.

Each is a ``PaperDataset`` in the registry (``registry.DATASETS``), under its ``data.source`` name.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
import urllib.request
from typing import Callable, Iterator, NamedTuple

import numpy as np

from mdlm_jax.data import cache, formats, tfds_source
from mdlm_jax.data.detokenizers import get_detokenizer
from mdlm_jax.data.formats import Unit
from mdlm_jax.data.registry import Dataset, DatasetNotFoundError, register_dataset
from mdlm_jax.data.tfds_source import TfdsName
from mdlm_jax.data.tokenizers import Tokenizer


class Selection(NamedTuple):
    """Split = ``part`` sliced ``[start:stop]`` by whole documents or by tokens (None = open end;
    negative counts from the end, as in Python)."""

    part: str
    by: str = "documents"  # 'documents' | 'tokens'
    start: int | None = None
    stop: int | None = None


def select(tokens: np.ndarray, offsets: np.ndarray, selection: Selection, *,
           what: str = "the split") -> tuple[np.ndarray, np.ndarray]:
    """The (tokens, offsets) view of ``selection`` over a part; no copy of the tokens."""
    num_docs, num_tokens = len(offsets) - 1, int(offsets[-1])
    total = num_docs if selection.by == "documents" else num_tokens
    for bound in (selection.start, selection.stop):
        if bound is not None and bound < 0 and -bound >= total:
            raise ValueError(f"{what} takes the last {-bound} {selection.by} of a part that has only {total}; "
                             "nothing would remain for the other split (for OpenWebText lower "
                             "data.owt_val_documents).")
    start, stop, _ = slice(selection.start, selection.stop).indices(total)
    stop = max(start, stop)
    if selection.by == "documents":
        return tokens[offsets[start]:offsets[stop]], offsets[start:stop + 1] - offsets[start]
    inner = offsets[(offsets > start) & (offsets < stop)]
    return tokens[start:stop], np.concatenate([[start], inner, [stop]]).astype(np.int64) - start


class Located(NamedTuple):
    """Where a dataset was found: units per part, the root their paths are relative to, and how."""

    parts: dict[str, list[Unit]]
    root: str
    origin: str


class HFCache(NamedTuple):
    """A dataset's names in the Hugging Face caches: ``datasets`` cache directory names, config,
    Arrow file prefix (``<prefix>-<split>*.arrow``), Hub repo id for Parquet snapshots, and field."""

    dirs: tuple[str, ...]
    config: str
    prefix: str
    repo: str
    field: str
    # a Hub snapshot of raw files instead of Parquet: a glob with {split} under the snapshot, and its kind
    hub_glob: str = ""
    hub_kind: str = ""


def hf_datasets_cache() -> str:
    """``$HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else ``~/.cache/huggingface/datasets``."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.path.expanduser(os.environ["HF_DATASETS_CACHE"])
    return os.path.join(os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface")), "datasets")


def _newest(groups: dict[str, list[str]]) -> list[str]:
    # Several cached builds (hashes) of one dataset: take the most recently written one.
    if not groups:
        return []
    return sorted(groups[max(groups, key=lambda d: os.path.getmtime(d))])


def _hf_files(hf: HFCache, split: str) -> tuple[list[str], str]:
    """Cached files of ``split``: Arrow files of a ``datasets`` build, else Hub Parquet files."""
    from mdlm_jax.data.tokenizers import hf_hub_cache  # pylint: disable=import-outside-toplevel

    groups: dict[str, list[str]] = {}
    for name in hf.dirs:
        pattern = os.path.join(hf_datasets_cache(), name, hf.config, "*", "*", f"{hf.prefix}-{split}*.arrow")
        for path in glob.glob(pattern):
            if re.fullmatch(rf"{re.escape(hf.prefix)}-{split}(-\d+-of-\d+)?\.arrow", os.path.basename(path)):
                groups.setdefault(os.path.dirname(path), []).append(path)
    if groups:
        return _newest(groups), "arrow"
    snapshots = os.path.join(hf_hub_cache(), "datasets--" + hf.repo.replace("/", "--"), "snapshots", "*")
    if hf.hub_glob:
        pattern, kind = os.path.join(snapshots, hf.hub_glob.format(split=split)), hf.hub_kind
    else:
        pattern, kind = os.path.join(snapshots, hf.config, f"{split}-*.parquet"), "parquet"
    for path in glob.glob(pattern):
        groups.setdefault(os.path.dirname(path), []).append(path)
    return _newest(groups), kind


def _units(kind: str, paths: list[str], field: str = "") -> list[Unit]:
    if kind in ("lines", "jsonl"):  # byte-range units, except gzipped files: one unit each
        return [u for p in paths for u in ([formats.file_unit(kind, p, field=field)] if p.endswith(".gz")
                                           else formats.line_units(kind, p, field=field))]
    return [formats.file_unit(kind, p, field=field) for p in paths]


def _download(url: str, dest: str) -> str:
    """Fetches ``url`` to ``dest`` atomically; raises DatasetNotFoundError when it cannot."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), suffix=".part")
    try:
        logging.info("Downloading %s to %s", url, dest)
        with urllib.request.urlopen(url, timeout=60) as response, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(tmp, dest)
    except OSError as e:
        os.unlink(tmp)
        raise DatasetNotFoundError(f"Download of {url} failed ({type(e).__name__}: {e}).") from e
    return dest


class PaperDataset(Dataset):
    """One of the paper's datasets: found in local files in its public layout, each part prepared
    into the token cache once (``prepare``), the splits views over the parts (``selections``).

    Args:
      name, title: registry key and display name.
      tokenizer, seq_len, packing: the paper's setting (the prepare CLI's defaults).
      detokenizer: the official detokenizer's name in ``detokenizers.DETOKENIZERS``.
      eval_split: the split the paper evaluates on.
      splits: split name -> Selection, given the data config.
      find: root directory -> units per part in the public layout (None if the layout is absent).
      layout: the public layout in words, for error messages.
      clean: per-record rule before detokenization (official stripping, newline collapsing).
      keep_empty: keep empty records as (EOS-only) documents, as the official stream does.
      hf: names in the Hugging Face caches, and the part -> split names used there.
      tfds: names in TensorFlow Datasets (read from an ArrayRecord copy in ``data.tfds_data_dir``).
      url / url_file: a canonical download (only with ``data.allow_download``).
    """

    def __init__(self, name: str, title: str, *, tokenizer: str, seq_len: int, packing: str, detokenizer: str,
                 eval_split: str, splits: Callable[..., dict[str, Selection]],
                 find: Callable[[str, object], dict[str, list[Unit]] | None], layout: str,
                 clean: Callable[[str], str] = lambda text: text, keep_empty: bool = False,
                 hf: HFCache | None = None, hf_parts: dict[str, str] | None = None,
                 tfds: TfdsName | None = None, url: str = "", url_file: str = ""):
        self.name, self.title = name, title
        self.tokenizer, self.seq_len, self.packing = tokenizer, seq_len, packing
        self.detokenizer, self.eval_split, self._splits = detokenizer, eval_split, splits
        self._find, self.layout, self.clean, self.keep_empty = find, layout, clean, keep_empty
        self.hf, self.hf_parts, self.tfds = hf, hf_parts or {}, tfds
        self.url, self.url_file = url, url_file

    def selections(self, data_config) -> dict[str, Selection]:
        """Split name -> the slice of a part it reads."""
        return self._splits(data_config)

    def splits(self, data_config) -> tuple[str, ...]:
        return tuple(self.selections(data_config))

    def selection(self, data_config, split: str) -> Selection:
        self.check_split(data_config, split)
        return self.selections(data_config)[split]

    def part_directory(self, data_config, tokenizer: Tokenizer, part: str) -> str:
        """The cache directory of one part (it need not exist)."""
        return cache.part_dir(cache.cache_dir_for(data_config), self.name, tokenizer.name,
                              self.detokenizer_for(data_config), part)

    def prepare(self, data_config, part: str, *, tokenizer: Tokenizer, shard: int = 0, num_shards: int = 1,
                progress: bool = False) -> dict:
        """Builds (or finds) the cache of one part, or shard ``shard`` of it; returns its meta.json.
        Raises if the cache exists but was built from other source files."""
        return self._prepare(data_config, part, tokenizer, shard, num_shards, progress)[1]

    def _prepare(self, data_config, part: str, tokenizer: Tokenizer, shard: int, num_shards: int,
                 progress: bool) -> tuple[cache.TokenArrays | None, dict]:
        """``prepare``'s work: (the cached arrays when they were already there, else None; meta)."""
        detok = self.detokenizer_for(data_config)
        directory = self.part_directory(data_config, tokenizer, part)
        try:
            located = self.locate(data_config)
        except DatasetNotFoundError:
            arrays = cache.open_part(directory)
            if arrays is not None:  # prepared elsewhere; the raw files need not be on this host
                return arrays, arrays.meta
            raise
        if part not in located.parts:
            raise DatasetNotFoundError(f"{self.title}: {located.origin} ({located.root}) has no files for the "
                                       f"{part!r} part (found {sorted(located.parts)}; expected {self.layout}).")
        units = located.parts[part]
        source = cache.fingerprint(units, located.root)
        if num_shards == 1:
            existing = cache.open_part(directory)  # merges complete shards when there are some
        else:
            existing = cache.load_dir(directory) or cache.load_dir(cache.shard_dir(directory, shard, num_shards))
        if existing is not None:
            if existing.meta.get("source_files") != source:
                raise ValueError(f"The cache {directory} was built from other {self.title} files "
                                 f"({existing.meta.get('source_root')}) than {located.root}; delete it or set "
                                 "data.cache_dir elsewhere.")
            return existing, existing.meta
        logging.info("Preparing %s/%s from %s (%s) into %s", self.name, part, located.root, located.origin, directory)
        meta = dict(dataset=self.name, part=part, detokenizer=detok, source_root=located.root,
                    origin=located.origin, source_files=source)
        return None, cache.build_part(units, directory, tokenizer=tokenizer, detokenize=get_detokenizer(detok),
                                      clean=self.clean, keep_empty=self.keep_empty, meta=meta, shard=shard,
                                      num_shards=num_shards, progress=progress)

    def tokens(self, data_config, split: str, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
        selection = self.selection(data_config, split)
        arrays, _ = self._prepare(data_config, selection.part, tokenizer, 0, 1, False)
        if arrays is None:  # just built
            arrays = cache.open_part(self.part_directory(data_config, tokenizer, selection.part))
        return select(arrays.tokens, arrays.offsets, selection, what=f"The {split!r} split of {self.title}")

    def _locate_tfds(self, data_config, tried: list[str]) -> Located | None:
        """A prepared ArrayRecord copy in the tfds data dir; TFRecord-only copies are refused
        (raised when ``data.tfds_data_dir`` is set, else noted in ``tried``)."""
        data_dir, explicit = tfds_source.data_dir_for(data_config)
        prepared = tfds_source.find(self.tfds, data_dir)
        readable = [p for p in prepared if tfds_source.ARRAY_RECORD in p.formats]
        if readable:
            try:
                parts = tfds_source.units(readable[0], self.tfds)
            except (ImportError, ValueError) as e:
                raise DatasetNotFoundError(f"{self.title}: {e}") from e
            if parts:
                return Located(parts, readable[0].directory, f"TensorFlow Datasets ({readable[0].directory})")
            tried.append(f"the TensorFlow Datasets copy {readable[0].directory} (none of the splits "
                         f"{sorted(set(self.tfds.parts.values()))})")
            return None
        if prepared:
            message = (f"the TensorFlow Datasets copy {prepared[0].directory} is in the "
                       f"{'/'.join(sorted(prepared[0].formats))} format, which only TensorFlow can read; rebuild it "
                       f"in the ArrayRecord format with `{self.tfds.build_command(data_dir)}` (or convert it with "
                       f"`tfds convert_format --dataset_version_dir={prepared[0].directory} "
                       f"--out_file_format={tfds_source.ARRAY_RECORD}`) on a machine with TensorFlow")
            if explicit:
                raise DatasetNotFoundError(f"{self.title}: {message}.")
            logging.warning("%s: %s; skipped.", self.title, message)
            tried.append(message)
            return None
        tried.append(f"the TensorFlow Datasets data dir {data_dir} (no prepared {self.tfds.name})")
        return None

    def locate(self, data_config) -> Located:
        """The units of every part found: in ``data.path``, else an ArrayRecord TensorFlow Datasets
        copy, else the HF caches, else a download."""
        path = os.path.expanduser(str(getattr(data_config, "path", "") or ""))
        fix = f"--config.data.path=/path/to/{re.split(r'[/ ]', self.layout)[0]}"
        if path:
            if not os.path.exists(path):
                raise DatasetNotFoundError(f"{self.title}: data.path {path!r} does not exist; set {fix} "
                                           f"(expected {self.layout}).")
            parts = self._find(path, data_config)
            if not parts:
                raise DatasetNotFoundError(f"{self.title}: {path!r} does not hold the expected layout: "
                                           f"{self.layout}. Point {fix} at it.")
            return Located(parts, path if os.path.isdir(path) else os.path.dirname(path), "data.path")
        tried = ["data.path (unset)"]
        if self.tfds is not None:
            located = self._locate_tfds(data_config, tried)
            if located is not None:
                return located
        if self.hf is not None:
            parts, kind = {}, ""
            for part, hf_split in self.hf_parts.items():
                files, kind = _hf_files(self.hf, hf_split)
                if files:
                    parts[part] = _units(kind, files, self.hf.field)
            if parts:
                root = os.path.commonpath([os.path.dirname(u.path) for us in parts.values() for u in us])
                return Located(parts, root, f"the Hugging Face cache ({kind})")
            tried.append(f"the Hugging Face datasets cache {hf_datasets_cache()} and Hub cache "
                         f"(no {self.hf.repo} / {self.hf.config})")
        if self.url:
            dest = os.path.join(cache.cache_dir_for(data_config), "raw", self.url_file)
            if os.path.isfile(dest):
                return Located(self._find(dest, data_config), os.path.dirname(dest), "an earlier download")
            if getattr(data_config, "allow_download", False):
                return Located(self._find(_download(self.url, dest), data_config), os.path.dirname(dest),
                               f"a download of {self.url}")
            tried.append(f"a download of {self.url} (not allowed: data.allow_download is False)")
        raise DatasetNotFoundError(
            f"{self.title} was not found. Tried: {'; '.join(tried)}. Get a copy ({self.layout}) and set {fix}"
            + (", or set --config.data.allow_download=True" if self.url else "")
            + (f"; or prepare it with TensorFlow Datasets on a machine with TensorFlow, `{self.tfds.build_command()}`, "
               "and set --config.data.tfds_data_dir=DIR (default $TFDS_DATA_DIR or ~/tensorflow_datasets; read "
               "without TensorFlow)" if self.tfds else "")
            + f"; or build the cache elsewhere with `python -m mdlm_jax.data prepare --dataset {self.name} "
              "--source DIR --out CACHE_DIR` and set data.cache_dir=CACHE_DIR.")


# --------------------------------------------------------------------------- layouts


def _candidate_dirs(root: str, names: tuple[str, ...]) -> Iterator[str]:
    """``root`` itself, then each ``root/<name>`` that is a directory."""
    for candidate in (root,) + tuple(os.path.join(root, n) for n in names):
        if os.path.isdir(candidate):
            yield candidate


def _split_files(root: str, subdirs: tuple[str, ...], files: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """part -> [path] for the first of each part's candidate file names found in root or a subdir."""
    if not os.path.isdir(root):
        return {}
    for directory in _candidate_dirs(root, subdirs):
        found = {}
        for part, names in files.items():
            for name in names:
                if os.path.isfile(os.path.join(directory, name)):
                    found[part] = [os.path.join(directory, name)]
                    break
        if found:
            return found
    return {}


def _find_lm1b(root: str, cfg) -> dict[str, list[Unit]] | None:
    for directory in _candidate_dirs(root, ("1-billion-word-language-modeling-benchmark-r13output",)):
        train = sorted(glob.glob(os.path.join(directory, "training-monolingual.tokenized.shuffled", "news.en-*")))
        test = sorted(glob.glob(os.path.join(directory, "heldout-monolingual.tokenized.shuffled",
                                             "news.en.heldout-*")))
        parts = {k: _units("lines", v) for k, v in (("train", train), ("test", test)) if v}
        if parts:
            return parts
    return None


_OWT_CLEAN = re.compile(r"\n\n\n+")


def owt_clean(text: str) -> str:
    """The HF ``openwebtext`` rule: runs of three or more newlines become two, then strip."""
    return _OWT_CLEAN.sub("\n\n", text).strip()


def _find_owt(root: str, cfg) -> dict[str, list[Unit]] | None:
    field = getattr(cfg, "jsonl_field", "text") or "text"
    if os.path.isfile(root):
        if root.endswith((".tar.xz", ".tar")):
            raise DatasetNotFoundError(
                f"OpenWebText: {root!r} is the outer archive; extract it first (tar -xJf {os.path.basename(root)}) "
                "and set data.path to the extracted 'openwebtext' directory of urlsf_subset*.xz files.")
        kinds = {".jsonl": "jsonl", ".parquet": "parquet", ".arrow": "arrow", ".txt": "text"}
        ext = os.path.splitext(root)[1]
        return {"all": _units(kinds[ext], [root], field)} if ext in kinds else None
    for directory in _candidate_dirs(root, ("openwebtext",)):
        subsets = sorted(f for f in os.listdir(directory) if f.endswith("xz") and not f.endswith(".tar.xz"))
        if subsets:  # the original archive layout: openwebtext/urlsf_subsetNN-M_data.xz
            return {"all": _units("owt_subset", [os.path.join(directory, f) for f in subsets])}
    for kind, ext in (("jsonl", ".jsonl"), ("parquet", ".parquet"), ("arrow", ".arrow"), ("text", ".txt")):
        files = sorted(glob.glob(os.path.join(root, "**", "*" + ext), recursive=True))
        if files:
            return {"all": _units(kind, files, field)}
    return None


_C4_SHARD = re.compile(r"c4-(train|validation)\.\d{5}-of-\d{5}\.json(\.gz)?$")


def _find_c4(root: str, cfg) -> dict[str, list[Unit]] | None:
    """``allenai/c4``'s ``en/c4-{train,validation}.NNNNN-of-MMMMM.json.gz`` shards (any subset of
    them: a few train shards are enough to fine-tune), in root, root/en or root/c4/en."""
    for directory in _candidate_dirs(root, ("en", os.path.join("c4", "en"))):
        shards: dict[str, list[str]] = {}
        for name in sorted(os.listdir(directory)):
            match = _C4_SHARD.match(name)
            if match:
                shards.setdefault(match.group(1), []).append(os.path.join(directory, name))
        if shards:
            return {part: _units("jsonl", paths, "text") for part, paths in shards.items()}
    return None


def _find_text8(root: str, cfg) -> dict[str, list[Unit]] | None:
    candidates = [root] if os.path.isfile(root) else [os.path.join(root, "text8.zip"), os.path.join(root, "text8")]
    for path in candidates:
        if os.path.isfile(path):
            kind = "zip_member" if path.endswith(".zip") else "text"
            return {"all": [formats.file_unit(kind, path, field="text8")]}
    return None


def _files_finder(kind: str, subdirs: tuple[str, ...], files: dict[str, tuple[str, ...]], field: str = "",
                  file_part: str = ""):
    """A finder for datasets that come as one file per split (``file_part``: the part a path
    that is itself a file stands for)."""

    def find(root: str, cfg) -> dict[str, list[Unit]] | None:
        if os.path.isfile(root) and file_part:
            ext_kind = "jsonl" if root.endswith(".jsonl") else kind
            return {file_part: _units(ext_kind, [root], field)}
        found = _split_files(root, subdirs, files)
        return {part: _units("jsonl" if paths[0].endswith(".jsonl") else kind, paths, field)
                for part, paths in found.items()} or None

    return find


def _wikitext(name: str, dirname: str, title: str, hf_config: str) -> PaperDataset:
    files = {part: (f"wiki.{stem}.raw", f"wiki.{stem}.tokens")
             for part, stem in (("train", "train"), ("validation", "valid"), ("test", "test"))}
    return PaperDataset(
        name, title, tokenizer="gpt2", seq_len=1024, packing="wrap", detokenizer="wikitext",
        eval_split="validation", splits=_whole_parts("train", "validation", "test"),
        find=_files_finder("lines", (dirname + "-raw", dirname), files),
        layout=f"{dirname}-raw/wiki.{{train,valid,test}}.raw (or the .tokens files of {dirname}/)",
        # HF rows: a line as is, newline kept; a blank line becomes "" and still adds an EOS.
        clean=lambda row: row if row.strip() else "", keep_empty=True,
        hf=HFCache(("wikitext", "Salesforce___wikitext"), hf_config, "wikitext", "Salesforce/wikitext", "text"),
        hf_parts={"train": "train", "validation": "validation", "test": "test"})


def _scientific(name: str, config: str, title: str) -> PaperDataset:
    files = {"train": ("train.txt", "train.jsonl"), "validation": ("val.txt", "validation.jsonl", "val.jsonl"),
             "test": ("test.txt", "test.jsonl")}
    return PaperDataset(
        name, title, tokenizer="gpt2", seq_len=1024, packing="wrap", detokenizer="wikitext+lm1b",
        eval_split="validation", splits=_whole_parts("train", "validation", "test"),
        # Cohan et al.'s release: JSON lines with 'article_text' (a list of paragraphs, joined
        # by newlines as the HF loader does); converted copies carry 'article'.
        find=_files_finder("jsonl", (f"{config}-dataset",), files, field="article|article_text"),
        layout=f"{config}-dataset/{{train,val,test}}.txt (JSON lines with 'article_text' or 'article')",
        hf=HFCache(("scientific_papers", "armanc___scientific_papers"), config, "scientific_papers",
                   "armanc/scientific_papers", "article"),
        hf_parts={"train": "train", "validation": "validation", "test": "test"},
        # tfds's article: article_text joined by newlines, as here.
        tfds=TfdsName("scientific_papers", ("article",), {s: s for s in ("train", "validation", "test")},
                      configs=(config,)))


def _whole_parts(*names: str) -> Callable[..., dict[str, Selection]]:
    return lambda cfg: {n: Selection(n) for n in names}


def _owt_splits(cfg) -> dict[str, Selection]:
    n = int(getattr(cfg, "owt_val_documents", 100_000))
    if n <= 0:
        raise ValueError(f"data.owt_val_documents must be positive; got {n}.")
    return {"train": Selection("all", "documents", None, -n), "validation": Selection("all", "documents", -n, None)}


# text8: the first 90M characters train, the next 5M validate, the last 5M test (D3PM's split);
# one character is one token, so character offsets are token offsets.
TEXT8_SPLITS = {"train": (0, 90_000_000), "validation": (90_000_000, 95_000_000), "test": (95_000_000, None)}


for _dataset in (
    PaperDataset("lm1b", "LM1B (One Billion Words)", tokenizer="bert-base-uncased", seq_len=128, packing="pad",
                 detokenizer="lm1b", eval_split="test", splits=_whole_parts("train", "test"), find=_find_lm1b,
                 layout="1-billion-word-language-modeling-benchmark-r13output/{training-monolingual.tokenized."
                        "shuffled/news.en-000??-of-00100, heldout-monolingual.tokenized.shuffled/"
                        "news.en.heldout-000??-of-00050}",
                 # tfds / HF: every line stripped; test = all 50 heldout files (306,688 sentences).
                 clean=str.strip,
                 hf=HFCache(("lm1b",), "plain_text", "lm1b", "lm1b", "text"),
                 hf_parts={"train": "train", "test": "test"},
                 tfds=TfdsName("lm1b", ("text",), {"train": "train", "test": "test"}, configs=("", "plain_text"))),
    PaperDataset("owt", "OpenWebText", tokenizer="gpt2", seq_len=1024, packing="wrap", detokenizer="none",
                 eval_split="validation", splits=_owt_splits, find=_find_owt,
                 layout="openwebtext/urlsf_subset*.xz (the extracted openwebtext.tar.xz), or a folder of .txt, "
                        ".jsonl or .parquet files with a 'text' field",
                 clean=owt_clean,
                 hf=HFCache(("openwebtext", "Skylion007___openwebtext"), "plain_text", "openwebtext",
                            "Skylion007/openwebtext", "text"),
                 hf_parts={"all": "train"}),
    PaperDataset("text8", "text8", tokenizer="text8", seq_len=256, packing="chunk", detokenizer="none",
                 eval_split="test",
                 splits=lambda cfg: {s: Selection("all", "tokens", a, b) for s, (a, b) in TEXT8_SPLITS.items()},
                 find=_find_text8, layout="text8.zip (or the extracted text8 file)",
                 url="http://mattmahoney.net/dc/text8.zip", url_file="text8.zip"),
    # The paper's BERT fine-tuning set (section 5.1): L = 128 with bert-base-uncased, documents
    # concatenated and wrapped (the official dataloader's wrap; --config.data.packing=pad truncates
    # each document to one block instead, MosaicBERT's pretraining rule); validation: the published
    # validation shards.
    PaperDataset("c4", "C4 (en)", tokenizer="bert-base-uncased", seq_len=128, packing="wrap", detokenizer="none",
                 eval_split="validation", splits=_whole_parts("train", "validation"), find=_find_c4,
                 layout="c4/en/c4-{train,validation}.NNNNN-of-MMMMM.json.gz (allenai/c4 as published; any subset "
                        "of the shards)",
                 hf=HFCache(("c4", "allenai___c4"), "en", "c4", "allenai/c4", "text",
                            hub_glob="en/c4-{split}.*-of-*.json.gz", hub_kind="jsonl"),
                 hf_parts={"train": "train", "validation": "validation"}),
    _wikitext("wikitext2", "wikitext-2", "WikiText-2", "wikitext-2-raw-v1"),
    _wikitext("wikitext103", "wikitext-103", "WikiText-103", "wikitext-103-raw-v1"),
    PaperDataset("ptb", "Penn Treebank", tokenizer="gpt2", seq_len=1024, packing="wrap", detokenizer="ptb",
                 eval_split="validation", splits=_whole_parts("train", "validation", "test"),
                 find=_files_finder("lines", ("simple-examples/data", "data"),
                                    {"train": ("ptb.train.txt",), "validation": ("ptb.valid.txt",),
                                     "test": ("ptb.test.txt",)}),
                 layout="ptb/ptb.{train,valid,test}.txt (one sentence per line)", clean=str.strip,
                 hf=HFCache(("ptb_text_only", "ptb-text-only___ptb_text_only"), "penn_treebank", "ptb_text_only",
                            "ptb-text-only/ptb_text_only", "sentence"),
                 hf_parts={"train": "train", "validation": "validation", "test": "test"}),
    PaperDataset("lambada", "LAMBADA", tokenizer="gpt2", seq_len=1024, packing="wrap", detokenizer="lambada",
                 eval_split="test", splits=_whole_parts("test"),
                 find=_files_finder("lines", ("lambada",),
                                    {"test": ("lambada_test.jsonl", "lambada_test_plain_text.txt")},
                                    field="text", file_part="test"),
                 layout="lambada/lambada_test.jsonl (OpenAI's, a 'text' field) or lambada_test_plain_text.txt",
                 url="https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
                 # Not tfds's `lambada`: that is the original plain-text release, not OpenAI's text the
                 # paper evaluates on.
                 url_file="lambada_test.jsonl"),
    PaperDataset("ag_news", "AG News", tokenizer="gpt2", seq_len=1024, packing="wrap", detokenizer="wikitext+lm1b",
                 eval_split="test", splits=_whole_parts("train", "test"),
                 find=_files_finder("ag_news_csv", ("ag_news_csv",),
                                    {"train": ("train.csv", "train.jsonl"), "test": ("test.csv", "test.jsonl")},
                                    field="text"),
                 layout="ag_news_csv/{train,test}.csv (class, title, description) or {train,test}.jsonl with 'text'",
                 hf=HFCache(("ag_news", "fancyzhx___ag_news"), "default", "ag_news", "fancyzhx/ag_news", "text"),
                 hf_parts={"train": "train", "test": "test"},
                 tfds=TfdsName("ag_news_subset", ("title", "description"), {"train": "train", "test": "test"})),
    _scientific("pubmed", "pubmed", "PubMed (scientific_papers)"),
    _scientific("arxiv", "arxiv", "arXiv (scientific_papers)"),
):
    register_dataset(_dataset)
