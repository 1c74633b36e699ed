"""Facts: parse generated `subject | relation | object` lines, ground them in their chunk and de-duplicate them
(their entities are merged and rolled up in `pipeline.entities`)."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)])\s*")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = "\"'`.,;:!?()[]{}<>"
_WORDS = re.compile(r"[A-Za-z0-9][\w'\u2019-]*")  # the words a copied line is made of (pipeline/grammar.py)
_WORD_GAP = r"[\W_]+"  # between a copied line's words, in the text: spaces, a line break, a comma, a dash
_PRONOUN_BEFORE = re.compile(r"(?<!\w)(?:he|she)\s+$", re.IGNORECASE)
# where the sentence before a clause starts: not after the title of "Mr. Darcy"
_SENTENCE_END = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)[.!?;]")
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
    object found as whole words (case-insensitive) in the chunk. The span is the clause the line copies where
    the chunk has its relation and object word for word, from the subject's mention (or the "he"/"she") before
    it in its sentence; else from the first mention of the subject or object to the last one; the whole chunk
    when neither is found."""
    clause = _mention(f"{t.relation} {t.object}", text, char_start, char_end, _WORD_GAP)
    found = [m for name in (t.subject, t.object) if (m := _mention(name, text, char_start, char_end))]
    if clause is None:  # not a copy of the text ("paces the Pequod" of "paces the deck of the Pequod")
        if not found:
            return char_start, char_end, 0.0
        return min(m.start() for m in found), max(m.end() for m in found), len(found) / 2
    score = (1 + (_mention(t.subject, text, char_start, char_end) is not None)) / 2  # the object is in the clause
    start, end = clause.span()
    ends = list(_SENTENCE_END.finditer(text, char_start, start))
    sentence = ends[-1].end() if ends else char_start
    subject = _mention(t.subject, text, sentence, start, last=True)
    pronoun = _PRONOUN_BEFORE.search(text, sentence, start)
    if subject is not None:
        start = subject.start()
    elif pronoun is not None:  # the line's subject is what "he" resolved to
        start = pronoun.start()
    return start, end, score



def _mention(phrase: str, text: str, start: int, end: int, gap: str = r"\s+", last: bool = False):
    """The first (or last) whole-word match of `phrase` in text[start:end]; its words may be broken by any
    whitespace (a fact is written on one line, the text may break it), or by `gap`."""
    words = phrase.split() if gap == r"\s+" else _WORDS.findall(phrase)
    if not words:
        return None
    # whole words only, so "He" does not match inside "the"
    pattern = re.compile(rf"(?<!\w){gap.join(map(re.escape, words))}(?!\w)", re.IGNORECASE)
    if not last:
        return pattern.search(text, start, end)
    matches = list(pattern.finditer(text, start, end))
    return matches[-1] if matches else None


def dedupe(rows: Iterable[dict]) -> list[dict]:
    """Fact rows of one document without repeats (same normalised key); the first occurrence is kept."""
    seen, out = set(), []
    for row in rows:
        key = fact_key(Triple(row["subject"], row["relation"], row["object"]))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
