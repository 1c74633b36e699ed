"""Facts planted in real book text, for knowledge-extraction and recall benchmarks.

Each fact is one sentence ("Inspector Halvorsen keeps the ledger in the observatory of Bergen.") put at a
sentence boundary at a random depth of a book excerpt; some are followed, a few paragraphs later, by a pronoun
sentence that changes them ("Years later, he moved the ledger to the lighthouse at Tromsø."): the answer is
then the later place, and the subject of the change is only known by resolving "he".
"""

import random
import re
from dataclasses import dataclass
from pathlib import Path

from memgpt.archival import NOT_AFTER_TITLE

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpus"

PEOPLE = [
    ("Inspector", "Halvorsen", "he"), ("Professor", "Okonkwo", "she"), ("Captain", "Lindqvist", "he"),
    ("Doctor", "Marchetti", "she"), ("Judge", "Ferreira", "he"), ("Colonel", "Kowalczyk", "she"),
    ("Reverend", "Abernathy", "he"), ("Madame", "Duvalier", "she"), ("Sergeant", "Oyelaran", "he"),
    ("Countess", "Vasquez", "she"),
]  # fmt: skip
THINGS = [
    "ledger",
    "silver compass",
    "violin",
    "brass key",
    "green journal",
    "old map",
    "telescope",
    "locket",
]
PLACES = [
    "the observatory of Bergen", "the lighthouse at Tromsø", "the chapel of Arles", "the mill at Ghent",
    "the library of Uppsala", "the harbour of Cádiz", "the abbey of Melk", "the tower of Pisa",
    "the boathouse at Galway", "the vault of Zurich", "the granary of Lviv", "the bathhouse of Bath",
]  # fmt: skip
FACT = "{title} {name} keeps the {thing} in {place}."
FOLLOW_UP = "Years later, {pronoun} moved the {thing} to {place}."
QUESTION = "Where does {title} {name} keep the {thing}?"


@dataclass(frozen=True)
class PlantedFact:
    title: str
    name: str
    thing: str
    place: str  # where the fact sentence puts it
    final_place: str  # where it is at the end (the follow-up's place, if any)
    char_start: int  # of the fact sentence in the document
    follow_up_start: int | None  # of the follow-up sentence, None if the fact is never changed

    @property
    def person(self) -> str:
        return f"{self.title} {self.name}"

    @property
    def question(self) -> str:
        return QUESTION.format(title=self.title, name=self.name, thing=self.thing)


@dataclass(frozen=True)
class PlantedDocument:
    doc_id: str
    text: str
    facts: list[PlantedFact]


def book_text(name: str = "pride_and_prejudice.txt", corpus: Path = CORPUS) -> str:
    path = corpus / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the benchmarks read books from ../shared/corpus/")
    return path.read_text(encoding="utf-8")


def sentence_ends(text: str) -> list[int]:
    """Offsets just after a sentence's end (". " and the like), where a planted sentence can go."""
    # "Mr. Darcy" is one sentence: never after a title or an initial, as archival memory cuts sentences
    return [m.end() for m in re.finditer(NOT_AFTER_TITLE + r"[.!?][\"']?\s+(?=[A-Z\"])", text)]


def plant(
    doc_id: str, excerpt: str, n_facts: int, seed: int, follow_up_share: float = 0.5, gap_chars: int = 2500
) -> PlantedDocument:
    """`excerpt` with `n_facts` facts (distinct people, things and places) at random sentence boundaries; about
    `follow_up_share` of them changed later by a pronoun sentence about `gap_chars` further on."""
    rng = random.Random(seed)
    people = rng.sample(PEOPLE, n_facts)
    things = rng.sample(THINGS, n_facts)
    places = rng.sample(PLACES, 2 * n_facts)
    ends = sentence_ends(excerpt)
    if len(ends) < 4 * n_facts:
        raise ValueError(f"{doc_id}: an excerpt of {len(excerpt)} characters has too few sentences")
    slots = sorted(rng.sample(range(len(ends) // 8, len(ends) * 7 // 10), n_facts))  # fact sentences
    inserts: list[tuple[int, int, str, str]] = []  # (offset, fact index, kind, sentence)
    for i, ((title, name, pronoun), thing) in enumerate(zip(people, things, strict=True)):
        at = ends[slots[i]]
        inserts.append((at, i, "fact", FACT.format(title=title, name=name, thing=thing, place=places[2 * i])))
        if rng.random() < follow_up_share:
            later = next((e for e in ends if e >= at + gap_chars), ends[-1])
            sentence = FOLLOW_UP.format(pronoun=pronoun, thing=thing, place=places[2 * i + 1])
            inserts.append((later, i, "follow_up", sentence))
    text, starts, last = [], {}, 0
    for offset, i, kind, sentence in sorted(inserts, key=lambda x: (x[0], x[2] == "follow_up")):
        text.append(excerpt[last:offset])
        starts[(i, kind)] = sum(map(len, text))
        text.append(sentence + " ")
        last = offset
    text.append(excerpt[last:])
    facts = []
    for i, ((title, name, _), thing) in enumerate(zip(people, things, strict=True)):
        changed = (i, "follow_up") in starts
        final = places[2 * i + 1] if changed else places[2 * i]
        facts.append(
            PlantedFact(
                title, name, thing, places[2 * i], final, starts[(i, "fact")], starts.get((i, "follow_up"))
            )
        )
    return PlantedDocument(doc_id, "".join(text), facts)


def planted_corpus(
    n_docs: int,
    chars: int,
    n_facts: int,
    seed: int = 0,
    books: tuple[str, ...] | None = None,
    gap_chars: int = 2500,
) -> list[PlantedDocument]:
    """`n_docs` excerpts of `chars` characters from the books, each with its planted facts (a follow-up about
    `gap_chars` after its fact)."""
    books = books or ("pride_and_prejudice.txt", "moby_dick.txt")
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        book = book_text(books[d % len(books)])
        start = rng.randrange(len(book) // 10, len(book) - chars)
        start = book.find("\n\n", start) + 2  # from a paragraph's start
        excerpt = book[start : start + chars]
        docs.append(plant(f"doc-{d:02d}", excerpt, n_facts, seed * 1000 + d, gap_chars=gap_chars))
    return docs


def place_words(place: str) -> set[str]:
    """The words that name a place ("the observatory of Bergen" -> {"observatory", "bergen"})."""
    return {w for w in re.findall(r"\w+", place.casefold()) if w not in {"the", "of", "at"}}
