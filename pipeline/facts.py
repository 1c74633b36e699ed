"""Facts: parse generated `subject | relation | object` lines, ground them in their chunk and de-duplicate them
(their entities are merged and rolled up in `pipeline.entities`)."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)])\s*")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = "\"'`.,;:!?()[]{}<>"
NO_FACTS = "none"  # what a model trained on the task format says for a chunk without facts


@dataclass(frozen=True)
class Triple:
    subject: str
    relation: str
    object: str


def parse_facts(generated: str) -> tuple[list[Triple], int]:
    """Triples from `subject | relation | object` lines and the number of non-blank lines that are not one."""
    triples, bad = [], 0
    for line in generated.splitlines():
        line = _BULLET.sub("", line.strip()).strip()
        if not line or line.casefold() == NO_FACTS:
            continue
        parts = [_SPACE.sub(" ", p).strip() for p in line.split("|")]
        if len(parts) == 3 and all(parts):
            triples.append(Triple(*parts))
        else:
            bad += 1
    return triples, bad


def normalize(name: str) -> str:
    """Normalised entity name: case-folded, whitespace collapsed, edge punctuation and a leading article dropped."""
    name = _SPACE.sub(" ", name.casefold()).strip().strip(_EDGE_PUNCT).strip()
    return _ARTICLE.sub("", name) or name


def fact_key(t: Triple) -> tuple[str, str, str]:
    """The de-duplication key of a fact."""
    return normalize(t.subject), _SPACE.sub(" ", t.relation.casefold()).strip(), normalize(t.object)


def ground(t: Triple, text: str, char_start: int, char_end: int) -> tuple[int, int, float]:
    """Evidence span (absolute offsets, inside [char_start, char_end)) and score: the share of subject and
    object found as whole words (case-insensitive) in the chunk; the whole chunk when neither is found."""
    spans = []
    for name in (t.subject, t.object):
        # whole words only, so "He" does not match inside "the"
        # any whitespace between words: a fact is written on one line, the text may break it
        pattern = r"\s+".join(map(re.escape, name.split()))
        m = re.compile(rf"(?<!\w){pattern}(?!\w)", re.IGNORECASE).search(text, char_start, char_end)
        if m:
            spans.append(m.span())
    if not spans:
        return char_start, char_end, 0.0
    return min(s for s, _ in spans), max(e for _, e in spans), len(spans) / 2


def dedupe(rows: Iterable[dict]) -> list[dict]:
    """Fact rows of one document without repeats (same normalised key); the first occurrence is kept."""
    seen, out = set(), []
    for row in rows:
        key = fact_key(Triple(row["subject"], row["relation"], row["object"]))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
