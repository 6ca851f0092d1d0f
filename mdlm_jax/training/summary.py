"""What a run prints about itself at start: the parameter overview and the compiled step's memory."""

from __future__ import annotations

import collections
import re

import jax


def _size(tree) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def param_overview(params) -> list[str]:
    """Log lines: the total parameter count, then each top-level module's, repeated modules
    (``blocks_0``, ``blocks_1``...) grouped as ``blocks_* (12 x 7.09M)``."""
    groups: dict[str, list[int]] = collections.OrderedDict()
    for name, sub in params.items():
        groups.setdefault(re.sub(r"_\d+$", "_*", name), []).append(_size(sub))
    total = _size(params)
    lines = [f"Parameters: {total:,} ({total / 1e6:.2f}M)"]
    width = max((len(n) for n in groups), default=0)
    for name, sizes in groups.items():
        each = f"  ({len(sizes)} x {sizes[0] / 1e6:.2f}M)" if len(sizes) > 1 else ""
        lines.append(f"  {name:<{width}}  {sum(sizes):>14,}  {100 * sum(sizes) / max(total, 1):5.1f}%{each}")
    return lines


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def memory_line(compiled) -> str:
    """One line from ``compiled.memory_analysis()`` (per device): arguments, outputs, temporaries
    and the total after donated buffers are reused; 'memory use unknown' where the backend
    reports none."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError):
        stats = None
    if stats is None:
        return "memory use unknown on this backend"
    args, out = stats.argument_size_in_bytes, stats.output_size_in_bytes
    temp, alias = stats.temp_size_in_bytes, stats.alias_size_in_bytes
    return (f"memory per device: {_gib(args + out + temp - alias)} (arguments {_gib(args)}, outputs {_gib(out)}, "
            f"temporaries {_gib(temp)}, donated and reused {_gib(alias)})")
