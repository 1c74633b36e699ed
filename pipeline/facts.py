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
# a sentence's end between a subject and its clause: not the dot of "Mr. Darcy" (the subject's own is before)
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


def ground(
    t: Triple, text: str, char_start: int, char_end: int, antecedents: dict[int, str] | None = None
) -> tuple[int, int, float]:
    """Evidence span (absolute offsets, inside [char_start, char_end)) and score: the share of subject and
    object found as whole words (case-insensitive) in the chunk. The span is the clause the line copies where
    the chunk has its relation and object word for word, from the subject's mention (or the "he"/"she") before
    it in its sentence; else from the first mention of the subject or object to the last one; the whole chunk
    when neither is found. `antecedents` (offsets in the chunk: the name each pronoun was resolved to) tell
    which "he" of two with the same words after it is the line's."""
    subject = _mentions(t.subject, text, char_start, char_end)
    clauses = _mentions(f"{t.relation} {t.object}", text, char_start, char_end, _WORD_GAP)
    if not clauses:  # not a copy of the text ("paces the Pequod" of "paces the deck of the Pequod")
        found = [m[0] for m in (subject, _mentions(t.object, text, char_start, char_end)) if m]
        if not found:
            return char_start, char_end, 0.0
        return min(m.start() for m in found), max(m.end() for m in found), len(found) / 2
    score = (1 + bool(subject)) / 2  # the object is in the clause
    # "was gone" may be several people's: the clause whose sentence names the subject, else one after a pronoun
    spans = [_subject_first(t.subject, text, char_start, c) for c in clauses]
    named = next((s for s, by in spans if by == "subject"), None)
    pronouns = [s for s, by in spans if by == "pronoun"]
    if antecedents is not None:  # the pronoun resolved to the subject, then one resolved to no one known
        means = lambda s: antecedents.get(s[0] - char_start)  # noqa: E731
        pronouns.sort(key=lambda s: 0 if means(s) == t.subject else 1 if means(s) is None else 2)
    return (*(named or next(iter(pronouns), None) or spans[0][0]), score)


def _subject_first(subject: str, text: str, char_start: int, clause: re.Match) -> tuple[tuple[int, int], str]:
    """The clause's span from the subject's last mention before it in its sentence (no sentence end between
    them), or from the "he"/"she" just before it; and which of the two ("subject", "pronoun", "")."""
    start, end = clause.span()
    before = _mentions(subject, text, max(char_start, start - 400), start)
    if before and not _SENTENCE_END.search(text, before[-1].end(), start):
        return (before[-1].start(), end), "subject"
    pronoun = _PRONOUN_BEFORE.search(text, max(char_start, start - 10), start)
    if pronoun is not None:  # the line's subject is what "he" resolved to
        return (pronoun.start(), end), "pronoun"
    return (start, end), ""


def _mentions(phrase: str, text: str, start: int, end: int, gap: str = r"\s+") -> list[re.Match]:
    """The whole-word matches of `phrase` in text[start:end]; its words may be broken by any whitespace (a fact
    is written on one line, the text may break it), or by `gap`."""
    words = phrase.split() if gap == r"\s+" else _WORDS.findall(phrase)
    if not words:
        return []
    # whole words only, so "He" does not match inside "the"
    pattern = re.compile(rf"(?<!\w){gap.join(map(re.escape, words))}(?!\w)", re.IGNORECASE)
    return list(pattern.finditer(text, start, end))


def dedupe(rows: Iterable[dict]) -> list[dict]:
    """Fact rows of one document without repeats (same normalised key); the first occurrence is kept."""
    seen, out = set(), []
    for row in rows:
        key = fact_key(Triple(row["subject"], row["relation"], row["object"]))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
