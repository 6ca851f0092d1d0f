"""Evaluators by config (``cfg.evals``): each entry names an evaluator type and its period; the
training loop only asks which are due and runs them.

An evaluator is a class registered with ``@register_evaluator("name")``: built once at the start
of a run (where it reads its data and checks its settings, before anything compiles) and called
as ``run(state, step, stop=...)`` -> the scalars to log, named ``eval/...``. One file and one
registry line add an evaluator; a config adds an entry::

    c.evals.bound_owt = dict(type="bound", every=5000)
"""

from __future__ import annotations

import abc
from typing import Any, Callable

EVALUATORS: dict[str, type["Evaluator"]] = {}


class Interrupted(RuntimeError):
    """A SIGTERM arrived during an evaluation: the run saves and exits without finishing it."""


class Evaluator(abc.ABC):
    """One evaluation of the training state.

    ``name``: the ``cfg.evals`` entry; ``entry``: its ConfigDict (``every`` and the type's options);
    ``exp``: the run's Experiment; ``workdir``: where outputs go. ``writer`` (a MetricsWriter, or
    None outside training) takes text outputs for TensorBoard.
    """

    def __init__(self, name: str, entry, exp, workdir: str | None):
        self.name, self.entry, self.exp, self.workdir = name, entry, exp, workdir

    @abc.abstractmethod
    def run(self, state, step: int, *, stop: Callable[[int], bool] | None = None, writer=None) -> dict[str, float]:
        """Evaluates ``state`` (a TrainState or ``task.Weights``) at ``step``; returns scalars named
        ``eval/...``. ``stop(i)`` is polled between batches; when it is true the evaluator raises
        Interrupted."""


def register_evaluator(name: str) -> Callable[[type], type]:
    """Class decorator: ``cfg.evals.<entry>.type`` (or the entry's own name) selects the class."""
    def register(cls: type) -> type:
        if name in EVALUATORS:
            raise ValueError(f"An evaluator named {name!r} is already registered ({EVALUATORS[name].__qualname__}).")
        EVALUATORS[name] = cls
        return cls
    return register


def entry_type(name: str, entry) -> str:
    """The evaluator type of a ``cfg.evals`` entry: its ``type`` field, else its name."""
    return entry.get("type", None) or name


def period(entry, cfg) -> int:
    """An entry's ``every``; unset (None) means ``train.eval_every``; 0 turns it off."""
    every = entry.get("every", None)
    return cfg.train.eval_every if every is None else int(every)


def enabled(cfg) -> dict[str, Any]:
    """The ``cfg.evals`` entries with a period > 0, by name (in config order)."""
    entries = cfg.get("evals", None) or {}
    return {name: entry for name, entry in entries.items() if period(entry, cfg) > 0}


def check(cfg) -> None:
    """Start-up checks of ``cfg.evals``: known types and periods >= 0 (ValueError naming the field)."""
    for name, entry in (cfg.get("evals", None) or {}).items():
        kind = entry_type(name, entry)
        if kind not in EVALUATORS:
            raise ValueError(f"evals.{name}: unknown evaluator type {kind!r}; choose one of {sorted(EVALUATORS)} "
                             f"(or set evals.{name}.type).")
        every = entry.get("every", None)
        if every is not None and int(every) < 0:
            raise ValueError(f"evals.{name}.every must be >= 0 (0 turns it off; unset: train.eval_every), "
                             f"got {every}.")


def make_evaluators(exp, workdir: str | None) -> list[tuple[Evaluator, int]]:
    """(evaluator, period) for every enabled entry of ``exp.cfg.evals``, each built now."""
    check(exp.cfg)
    return [(EVALUATORS[entry_type(name, entry)](name, entry, exp, workdir), period(entry, exp.cfg))
            for name, entry in enabled(exp.cfg).items()]


def due(period_: int, step: int, last_step: int) -> bool:
    """Whether an evaluator of this period runs at ``step``: every ``period_`` steps and at the end."""
    return period_ > 0 and (step % period_ == 0 or step == last_step)
