"""Scoring generated summaries and fact lines against a planted document's truth."""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .planted import Fact

_SUMMARY_LINE = re.compile(r"^\s*(?:-\s*)?(\w+)\s*:\s*(\w+)(?:\s*,\s*badge\s+(\w+))?\s*$")


def parse_summary(text: str) -> dict[str, dict[str, str]]:
    """`- Name: location, badge N` lines -> {name: state}; other lines are ignored, the first line per name wins."""
    state: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        m = _SUMMARY_LINE.match(line)
        if m and m.group(1) not in state:
            state[m.group(1)] = {"location": m.group(2)} | ({"badge": m.group(3)} if m.group(3) else {})
    return state


def state_accuracy(
    predicted: str | Mapping[str, Mapping[str, str]], truth: Mapping[str, Mapping[str, str]]
) -> float:
    """The share of true entities whose predicted final state (location and badge) is exactly right."""
    if not truth:
        raise ValueError("state_accuracy needs at least one true entity")
    pred = parse_summary(predicted) if isinstance(predicted, str) else predicted
    return sum(dict(pred.get(n, {})) == dict(st) for n, st in truth.items()) / len(truth)


def parse_facts(text: str) -> set[tuple[str, str, str]]:
    """`- subject | relation | object` lines -> a set of triples (bullet optional); other lines are ignored."""
    triples = set()
    for line in text.splitlines():
        line = line.strip().removeprefix("-")
        parts = [" ".join(p.split()) for p in line.split("|")]
        if len(parts) == 3 and all(parts):
            triples.add((parts[0], parts[1], parts[2]))
    return triples


@dataclass
class FactScore:
    """Counts behind fact precision / recall / F1; add scores of many chunks to micro-average them."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: "FactScore") -> "FactScore":
        return FactScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score_facts(predicted: str | Iterable[tuple[str, str, str]], truth: Iterable[Fact | tuple]) -> FactScore:
    """Exact-match counts of predicted triples against the true facts of the same chunk."""
    pred = parse_facts(predicted) if isinstance(predicted, str) else set(predicted)
    gold = {f.triple if isinstance(f, Fact) else tuple(f) for f in truth}
    return FactScore(tp=len(pred & gold), fp=len(pred - gold), fn=len(gold - pred))
