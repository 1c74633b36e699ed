"""Recall cases in real book text: facts stated once at chosen depths of an excerpt, asked in other words.

In the spirit of RULER (Hsieh et al. 2024), on the running text of the books in ../shared/corpus/, never on
repeated filler. Each haystack is one excerpt holding several cases, each asked on its own after the book:
- single: one fact of a kind (number, name, place, year, object), its question worded differently;
- keys: four facts of the same kind about four people (similar values), one of them asked;
- superseded: a fact and, later, its change ("By the spring ... had moved to ..."): the later value is right;
- multihop: a fact that names a person, and later a second fact about that person; the question names only
  the first fact's role, so the answer needs both.
Planted sentences go at sentence boundaries; names and values are not in any of the books.
"""

import random
import re
from dataclasses import dataclass, field

from .planted_text import book_text, sentence_ends

BOOKS = ("pride_and_prejudice.txt", "moby_dick.txt", "shakespeare.txt")
TASKS = ("single", "keys", "superseded", "multihop")

# (kind, statement, question, values): the statement as a narrator would say it; the question in other words
SINGLE = [
    ("number", "Old {who} had kept exactly {v} sheep on the hill farm before the hard winter came.",
     "How many sheep did {who} own on the farm?", ["37", "112", "64", "219", "83", "146"]),
    ("number", "It was said that {who} had walked {v} miles in a single week to see her.",
     "How far did {who} travel on foot in one week?", ["41", "58", "96", "73", "27", "132"]),
    ("name", "The surgeon who came to {who} that night was a quiet, stooping man called {v}.",
     "What was the name of the doctor who attended {who}?", ["Ephraim Holt", "Silas Penrose", "Jonas Quarrie", "Amos Kettering"]),
    ("name", "{who} had named the little grey horse {v}, after a cousin long dead.",
     "What did {who} call the horse?", ["Bramble", "Tamsin", "Corwen", "Piccolo"]),
    ("place", "{who} had grown up far away, in the town of {v}, and spoke of it seldom.",
     "In what town was {who} raised as a child?", ["Tromsø", "Valparaíso", "Samarkand", "Trieste", "Timbuktu", "Ushuaia"]),
    ("year", "{who} first went to sea in {v}, when hardly more than a boy.",
     "In which year did {who} begin sailing?", ["1783", "1791", "1768", "1802", "1776", "1759"]),
    ("object", "Beneath a loose board in the floor, {who} kept a small {v} that no one else had seen.",
     "What did {who} hide under the floorboards?", ["ivory chess knight", "copper whistle", "silver thimble", "glass eye", "jade frog"]),
    ("object", "When {who} left the house for the last time, nothing was carried away but a {v}.",
     "What was the only thing {who} took along when leaving?", ["brass sextant", "walnut music box", "tin lantern", "painted fan"]),
]  # fmt: skip
KEYS = ("The strongbox of {who} at the bank in Lombard Street was opened by the number {v}.",
        "What number opened the strongbox belonging to {who}?")  # fmt: skip
SUPERSEDED = (
    "{who} lodged for a time at an inn in {v}, near the old market.",
    "By the spring, {who} had given up those rooms and gone to live in {v} instead.",
    "Where is {who} living now, after leaving the inn?",
)  # fmt: skip
MULTIHOP = (
    "The letter was carried to {carrier} by a ferryman named {who}.",
    "{who}'s only daughter was called {v}.",
    "What was the name of the daughter of the ferryman who carried the letter to {carrier}?",
)  # fmt: skip
PEOPLE = [
    "Mr. Pellow", "Miss Ravensworth", "Captain Mordaunt", "Mrs. Quennell", "Mr. Tregarthen", "Lady Ashcombe",
    "Colonel Fairweather", "Miss Dunstable", "Mr. Oakenshaw", "Mrs. Pettigrew", "Sir Ambrose Vell",
    "Miss Hartigan", "Mr. Swithin", "Dr. Marchbank", "Mrs. Tolliver", "Mr. Gedge",
]  # fmt: skip
CARRIERS = ["Colonel Ashby", "the widow Harcourt", "Parson Blewitt", "Judge Ormerod"]
FERRYMEN = ["Tobias Wrenfield", "Caleb Stroud", "Eli Marrable", "Jethro Pascoe"]
DAUGHTERS = ["Hester", "Keziah", "Morwenna", "Jemima", "Tabitha"]
TOWNS = ["Penzance", "Ludlow", "Harrogate", "Kendal", "Lichfield", "Whitby", "Taunton", "Malvern"]


@dataclass(frozen=True)
class RecallCase:
    task: str  # one of TASKS, or "passkey-filler"
    kind: str  # what the answer is: number, name, place, year, object
    needles: tuple[str, ...]  # the planted sentences, in reading order
    question: str
    answer: str  # right when the reply holds it (case-insensitive) ...
    wrong: tuple[str, ...] = ()  # ... and none of these (other keys, the superseded value)
    depth: float = 0.0  # where the answer's sentence sits in the haystack (0: start, 1: end)

    def right(self, reply: str) -> bool:
        text = reply.casefold()
        return self.answer.casefold() in text and not any(w.casefold() in text for w in self.wrong)

    def superseded(self, reply: str) -> bool:
        """The reply names a wrong value (for `superseded`: the older one) instead of the answer."""
        text = reply.casefold()
        return any(w.casefold() in text for w in self.wrong) and self.answer.casefold() not in text


@dataclass(frozen=True)
class Haystack:
    book: str
    text: str
    cases: list[RecallCase] = field(default_factory=list)


def cases_for(rng: random.Random, n_single: int = 5) -> list[tuple[RecallCase, list[float]]]:
    """The cases of one haystack, each with the depths its needles go to (in reading order)."""
    people = rng.sample(PEOPLE, n_single + 5)
    out = []
    kinds = rng.sample(range(len(SINGLE)), n_single)  # distinct templates: no two facts share a key
    lo = 0.02
    for i, t in enumerate(kinds):
        kind, statement, question, values = SINGLE[t]
        who, v = people[i], rng.choice(values)
        depth = lo + (i + rng.random()) * (0.96 - lo) / n_single  # spread over the whole book, one per band
        case = RecallCase("single", kind, (statement.format(who=who, v=v),), question.format(who=who), v,
                          depth=depth)  # fmt: skip
        out.append((case, [depth]))
    keyed = people[n_single : n_single + 4]
    codes = _similar_codes(rng, len(keyed))
    asked = rng.randrange(len(keyed))
    depths = sorted(rng.uniform(0.05, 0.95) for _ in keyed)
    needles = tuple(KEYS[0].format(who=w, v=c) for w, c in zip(keyed, codes, strict=True))
    wrong = tuple(c for j, c in enumerate(codes) if j != asked)
    out.append((RecallCase("keys", "number", needles, KEYS[1].format(who=keyed[asked]), codes[asked], wrong,
                           depth=depths[asked]), depths))  # fmt: skip
    who = people[-1]
    old, new = rng.sample(TOWNS, 2)
    first, later = sorted([rng.uniform(0.05, 0.5), rng.uniform(0.55, 0.95)])
    needles = (SUPERSEDED[0].format(who=who, v=old), SUPERSEDED[1].format(who=who, v=new))
    out.append((RecallCase("superseded", "place", needles, SUPERSEDED[2].format(who=who), new, (old,),
                           depth=later), [first, later]))  # fmt: skip
    carrier, ferryman, daughter = rng.choice(CARRIERS), rng.choice(FERRYMEN), rng.choice(DAUGHTERS)
    first, later = sorted([rng.uniform(0.05, 0.6), rng.uniform(0.4, 0.95)])
    needles = (
        MULTIHOP[0].format(carrier=carrier, who=ferryman),
        MULTIHOP[1].format(who=ferryman, v=daughter),
    )
    out.append((RecallCase("multihop", "name", needles, MULTIHOP[2].format(carrier=carrier), daughter,
                           depth=later), [first, later]))  # fmt: skip
    return out


def _similar_codes(rng: random.Random, n: int) -> list[str]:
    """`n` distinct four-digit numbers sharing their first two digits (each a distractor of the others)."""
    head = rng.randrange(10, 100)
    tails = rng.sample(range(100), n)
    return [f"{head}{t:02d}" for t in tails]


def haystack(tokenizer, n_tokens: int, seed: int, book: str | None = None, tasks=TASKS) -> Haystack:
    """About `n_tokens` tokens of one book's running text (from a random paragraph) with the cases planted."""
    rng = random.Random(seed)
    book = book or BOOKS[seed % len(BOOKS)]
    text = book_text(book)
    ratio = _chars_per_token(tokenizer, text)
    chars = int(n_tokens * ratio)
    if chars >= len(text) * 0.9:
        raise ValueError(f"{book} has {len(text):,} characters: too short for {n_tokens:,} tokens")
    start = text.find("\n\n", rng.randrange(len(text) // 20, len(text) - chars)) + 2
    cases = [(c, d) for c, d in cases_for(rng) if c.task in tasks]
    budget = chars - sum(len(s) + 1 for c, _ in cases for s in c.needles)  # the total stays about n_tokens
    excerpt = text[start : start + budget]
    ends = sentence_ends(excerpt)
    if len(ends) < 20:
        raise ValueError(f"{book}: an excerpt of {len(excerpt):,} characters has too few sentence ends")
    inserts = []  # (offset, sentence)
    for case, depths in cases:
        taken = {o for o, _ in inserts}
        for sentence, depth in zip(case.needles, depths, strict=True):
            at = min(ends, key=lambda e: (e in taken, abs(e - depth * len(excerpt))))
            taken.add(at)
            inserts.append((at, sentence))
    parts, last = [], 0
    for offset, sentence in sorted(inserts, key=lambda x: x[0]):
        parts += [excerpt[last:offset], sentence + " "]
        last = offset
    parts.append(excerpt[last:])
    return Haystack(book, "".join(parts), [c for c, _ in cases])


def _chars_per_token(tokenizer, text: str) -> float:
    sample = text[len(text) // 3 : len(text) // 3 + 20_000]
    return len(sample) / len(tokenizer.encode(sample, add_special_tokens=False))


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))
