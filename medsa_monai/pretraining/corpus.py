"""The corpus of a foundation: planned data sets, each split into cases to train on and cases held out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.datalist import find_datalist, split_cases
from ..planning.plan import Plan

__all__ = ["CorpusSet", "read_corpus"]


@dataclass(frozen=True)
class CorpusSet:
    """One data set of the corpus.

    Attributes:
        name: the data set's name (its plan's ``dataset``, else the plan's folder), unique in the corpus.
        plan: its plan (``medsa plan``): labels or regions, spacing, slicing axis, normalisation, patch.
        training, validation: datalist items (``image``, ``label``) to train on and held out.
        weight: its share of the samples drawn, relative to the other sets (equal by default, whatever their size).
    """

    name: str
    plan: Plan
    training: tuple[dict, ...]
    validation: tuple[dict, ...]
    weight: float = 1.0

    @property
    def structures(self) -> int:
        """Classes or regions of the data set: the structures a sample may be."""
        return len(self.plan.class_names)


def _name(plan: Plan, path: Path, taken: set[str]) -> str:
    name = str(plan.get("dataset") or path.parent.name or path.stem)
    base, k = name, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def read_corpus(plan_files: Sequence[str | Path], weights: Mapping[str, float] | None = None,
                val_fraction: float = 0.1, seed: int = 0) -> list[CorpusSet]:
    """The data sets of ``plan_files`` (one ``plan.json`` each), their labelled cases split by a seeded
    ``val_fraction`` (the same split for the same cases and seed, whatever the order of the datalist).

    Args:
        weights: ``{name: weight}`` for some sets (the others weigh 1); an unknown name is an error.

    Raises:
        ValueError: no plan, an unknown name in ``weights``, a negative weight, or a set without training cases.
    """
    if not plan_files:
        raise ValueError("a corpus needs at least one plan.json (`medsa plan` of an ingested data set)")
    corpus, taken = [], set()
    for file in plan_files:
        path = Path(file)
        plan = Plan.load(path)
        name = _name(plan, path, taken)
        taken.add(name)
        items = find_datalist(Path(plan.datalist_file).parent if plan.datalist_file else path.parent,
                              plan.datalist_file, "training", ["image", "label"])
        training, validation = split_cases(items, val_fraction, seed)
        if not training:
            raise ValueError(f"data set '{name}' ({path}) has no case left to train on ({len(items)} labelled, "
                             f"val_fraction {val_fraction})")
        corpus.append(CorpusSet(name, plan, tuple(training), tuple(validation)))
    weights = dict(weights or {})
    unknown = sorted(set(weights) - taken)
    if unknown:
        raise ValueError(f"weights name {unknown}, which the corpus does not have; its sets: {sorted(taken)}")
    bad = {k: v for k, v in weights.items() if not float(v) >= 0}
    if bad:
        raise ValueError(f"sampling weights must be 0 or more, got {bad}")
    return [CorpusSet(s.name, s.plan, s.training, s.validation, float(weights.get(s.name, 1.0))) for s in corpus]
