"""Summaries that say what happened, each sentence with its evidence in the document.

`summary_from_states`: the main people of a document (the subjects of most facts), what the text first says
each of them did, and the last (how it ended for them), in the words of the facts: every word of a sentence is
the document's own or one of the summary's connectives (`CONNECTIVES`), and each sentence carries the spans
that say it: its fact's, and where the fact's subject came from a pronoun, the span that last named the
person. The facts are the memory's work (a pronoun's person is the entity states' choice, pipeline/
entity_states.py), so the summary costs no generation at all.

`evidence_for`: the same evidence for generated prose (a summary from the model's memory, running notes): each
sentence's best-matching sentence of the document, so that what a generated summary says can be checked.

`supported`: whether the spans of a sentence hold all of its content words, the measure of both.
"""

import bisect
import re
from collections import Counter
from collections.abc import Iterable

from memgpt.archival import SENTENCE_END
from memgpt.repetition import FUNCTION_WORDS
from pipeline.entities import changed, is_entity, merge_aliases

PEOPLE = 6  # people a summary follows, at most (and as many more who changed something)
CHANGES = 2  # changes per person told (the latest), each with the fact it changes
LAST_FACTS = 16  # facts kept per person with a saved memory state, the latest
# capitalised, and an entity, but no one a summary follows
_NOT_PEOPLE = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday january february september october november "
    "december christmas".split()
)
# the words a summary adds to the document's: never a claim about it
CONNECTIVES = frozenset(("finally", "later", "follows", "text"))
_WORD = re.compile(r"[^\W_]+")
SENTENCE = 400  # characters: how far a fact's span is widened to its sentence, at most


def content_words(text: str) -> set[str]:
    """The words of `text` that say something (case-folded): not function words, connectives or numbers."""
    words = {w.casefold() for w in _WORD.findall(text)}
    return {w for w in words if w not in FUNCTION_WORDS and w not in CONNECTIVES and not w.isdigit()}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence of `text`, without the space around it: a sentence ends at . ! ? (and a
    closing quote) before a space, never after a title or an initial ("Mrs. Bennet"), and at a blank line."""
    spans, at = [], 0
    for m in [*SENTENCE_END.finditer(text), None]:
        end = m.start() + len(m.group().rstrip()) if m else len(text)
        piece = text[at:end]
        if piece.strip():
            start = at + len(piece) - len(piece.lstrip())
            spans.append((start, start + len(piece.strip())))
        at = m.end() if m else len(text)
    return spans


def summary_from_states(
    facts: list[dict], text: str, chunk_starts: list[int], people: int = PEOPLE, least: int = 1
) -> tuple[str, list[dict]]:
    """The summary of a document from its fact rows (in reading order) and the evidence of each sentence
    (`sentence`: its index, `chunk_index`, `char_start`, `char_end`; a sentence may have several spans).

    It follows the `people` subjects of most facts: each one's first fact, the facts that changed an earlier
    one ("Later, ..."), and its last ("Finally, ..."); then, of everyone else, whoever changed something. No
    summary ("") where fewer than `least` people have facts."""
    by_person = _by_person(facts)
    if len(by_person) < max(least, 1):
        return "", []
    # a stable sort: among equals, the first to act comes first
    main = sorted(by_person, key=lambda p: -len(by_person[p]))[:people]
    others = [p for p in by_person if p not in main and changes(by_person[p])][:people]
    lines: list[tuple[str, list[dict]]] = []
    intro = f"The text follows {_listed(main)}."
    lines.append((intro, [_named(p, text, len(text), chunk_starts) for p in main]))
    for person in main + others:
        rows = by_person[person]
        told = {0} | {i for pair in changed(rows)[-CHANGES:] for i in pair}
        if person in main:
            told.add(len(rows) - 1)
        for i in sorted(told):
            opener = "" if i == min(told) else "Finally, " if i == len(rows) - 1 else "Later, "
            lines.append((opener + _sentence(rows[i]), _evidence(rows[i], text, chunk_starts)))
    summary = " ".join(s for s, _ in lines)
    # numbered as `sentence_spans` splits the summary: a line may end on "than I." and run on into the next
    starts = [a for a, _ in sentence_spans(summary)]
    at, evidence = 0, []
    for line, spans in lines:
        sentence = bisect.bisect_right(starts, at) - 1
        evidence += [{"sentence": sentence, **span} for span in spans]
        at += len(line) + 1
    return summary, evidence


def changes(rows: list[dict]) -> list[dict]:
    """The facts of one person that change an earlier one (`pipeline.entities.changed`)."""
    return [rows[j] for _, j in changed(rows)]


def person_facts(facts: list[dict], last: int = LAST_FACTS) -> dict[str, list[str]]:
    """Each person's latest `last` facts (in reading order) as sentences: what the document said of them last,
    each thing's latest state among them ("... moved the ledger to ..." after "... keeps the ledger in ...")."""
    return {person: [_sentence(row) for row in rows[-last:]] for person, rows in _by_person(facts).items()}


def evidence_for(summary: str, text: str, chunk_starts: list[int]) -> list[dict]:
    """For each sentence of a generated `summary`, the sentence of `text` that shares the most content words
    with it (none where it shares none): one pass over the document per summary."""
    said = [content_words(summary[a:b]) for a, b in sentence_spans(summary)]
    best: list[tuple[int, int, int]] = [(0, 0, 0)] * len(said)  # (shared words, start, end) per sentence
    for start, end in sentence_spans(text):
        words = content_words(text[start:end])
        for i, s in enumerate(said):
            shared = len(s & words)
            if shared > best[i][0]:
                best[i] = (shared, start, end)
    return [
        {"sentence": i, "chunk_index": _chunk_of(start, chunk_starts), "char_start": start, "char_end": end}
        for i, (shared, start, end) in enumerate(best)
        if shared
    ]


def supported(summary: str, evidence: Iterable[dict], text: str) -> list[bool]:
    """Per sentence of `summary`: whether its evidence spans in `text` hold every one of its content words."""
    spans: dict[int, str] = {}
    for e in evidence:
        spans[e["sentence"]] = spans.get(e["sentence"], "") + " " + text[e["char_start"] : e["char_end"]]
    return [
        bool(words) and words <= content_words(spans.get(i, ""))
        for i, words in enumerate(content_words(summary[a:b]) for a, b in sentence_spans(summary))
    ]


def _by_person(facts: list[dict]) -> dict[str, list[dict]]:
    """The facts about people (and saying something of them), by person in order of first fact; the forms of
    one name are one person ("Darcy", "Mr. Darcy": `pipeline.entities`), called by its most frequent form."""
    rows = [row for row in facts if _is_person(row["subject"]) and _says_something(row)]
    person = merge_aliases(row["subject"] for row in rows)
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(person.get(row["subject"], row["subject"]), []).append(row)
    return {Counter(r["subject"] for r in group).most_common(1)[0][0]: group for group in groups.values()}


def _is_person(subject: str) -> bool:
    """A name (not "rain") that is no day or month."""
    return subject[:1].isupper() and is_entity(subject) and subject.casefold() not in _NOT_PEOPLE


def _says_something(row: dict) -> bool:
    """Not the first half of a compound subject ("Mrs. Hurst | and | Miss Bingley")."""
    return row["relation"].split()[0].casefold() not in ("and", "or", "nor")


def _sentence(row: dict) -> str:
    words = f"{row['subject']} {row['relation']} {row['object']}".rstrip(" ,;:")
    return words if words.endswith((".", "!", "?")) else words + "."


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _named(person: str, text: str, before: int, chunk_starts: list[int]) -> dict:
    """The span of the last mention of `person` before offset `before` (none: the first of all)."""
    at = text.rfind(person, 0, before)
    at = text.find(person) if at < 0 else at
    return {"chunk_index": _chunk_of(max(at, 0), chunk_starts), "char_start": max(at, 0),
            "char_end": max(at, 0) + len(person)}  # fmt: skip


def _evidence(row: dict, text: str, chunk_starts: list[int]) -> list[dict]:
    """The sentence around the fact's span (which may hold its object only), and where its subject is not in
    it (a resolved pronoun), the last span before it that names the person."""
    start, end = _sentence_around(text, *_clause(row, text, chunk_starts))
    spans = [{"chunk_index": _chunk_of(start, chunk_starts), "char_start": start, "char_end": end}]
    if row["subject"] not in text[start:end] and text.rfind(row["subject"], 0, start) >= 0:
        spans.append(_named(row["subject"], text, start, chunk_starts))
    return spans


def _clause(row: dict, text: str, chunk_starts: list[int]) -> tuple[int, int]:
    """Where the fact's words are in its chunk: copied by the text grammar, its relation and object stand there
    as they are ("lay with closed eyes"), where the grounded span holds the subject's first mention only; the
    grounded span where they do not."""
    i = row["chunk_index"]
    low = chunk_starts[i] if 0 <= i < len(chunk_starts) else 0
    high = chunk_starts[i + 1] if 0 <= i + 1 < len(chunk_starts) else len(text)
    words = re.compile(r"\s+".join(map(re.escape, f"{row['relation']} {row['object']}".split())))
    # near the grounded span first: "was happy" may stand in another person's sentence earlier in the chunk
    found = words.search(text, max(low, row["char_start"] - SENTENCE), high) or words.search(text, low, high)
    return found.span() if found else (row["char_start"], row["char_end"])


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened to the sentence(s) that hold it, at most SENTENCE characters each way: a sentence
    ends as `sentence_spans` says (not at a title's dot, nor at a line break inside a paragraph)."""
    low = max(0, start - SENTENCE)
    ends = [m.end() for m in SENTENCE_END.finditer(text, low, start)]
    begin = ends[-1] if ends else low
    after = SENTENCE_END.search(text, end, min(len(text), end + SENTENCE))
    stop = after.start() + len(after.group().rstrip()) if after else min(len(text), end + SENTENCE)
    while begin < start and text[begin].isspace():
        begin += 1
    return begin, stop


def _chunk_of(offset: int, chunk_starts: list[int]) -> int:
    return max(0, bisect.bisect_right(chunk_starts, offset) - 1)
