"""Training documents from real books: a fact stated once in a book's running text, asked after it.

Each document is `n_segments` segments of `segment` tokens of one book's text, in the backbone's own tokenizer,
with one fact put at a sentence boundary somewhere in it: where a person hid an object, the number on a door, or
where a person went (two or three moves, bAbI-style: the last one is the answer). The question comes after the
text, in other words than the fact, with its answer (the loss is on the answer only); with `question_first` it
is also put before the text (as RMT's best runs did). Every book is split once: its first `train_share` of
characters is for training, the rest held out, so evaluation reads text the model never trained on.
"""

import random
import re
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "held_out")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
NAMES = ("Tobias Wrenfield", "Ingrid Maplethorpe", "Cyrus Ashdown", "Leonie Brackwater", "Mattias Holloway",
         "Perpetua Quill", "Anselm Drury", "Odile Farrant", "Bartholomew Sext", "Rosalind Vane")  # fmt: skip
THINGS = ("the pewter flask", "the map of the coast", "the red ledger", "the music box", "the spare key")
PLACES = ("the cellar", "the hayloft", "the chapel", "the boathouse", "the attic", "the orchard", "the stable",
          "the library", "the kitchen garden", "the gatehouse")  # fmt: skip
KINDS = ("hidden", "number", "moves")


@dataclass
class RecallDoc:
    segments: list[list[int]]  # n_segments x segment token ids
    question: list[int]  # the question after the text ("\nQuestion: ...\nAnswer:")
    answer: list[int]  # its answer's tokens, then the end of text
    answer_text: str
    fact_segments: list[int]  # the segments the fact's sentences are in


class BookSplits:
    """The books' text, each split once into a training part and a held-out part."""

    def __init__(self, files: list[str | Path], train_share: float = 0.85):
        self.parts: dict[str, list[str]] = {s: [] for s in SPLITS}
        for f in files:
            text = " ".join(Path(f).read_text(encoding="utf-8", errors="replace").split())
            cut = text.find(". ", int(len(text) * train_share)) + 1 or int(len(text) * train_share)
            self.parts["train"].append(text[:cut])
            self.parts["held_out"].append(text[cut:])
        if not files:
            raise ValueError("book recall needs text_files: the books its documents are cut from")

    def sentences(self, split: str, rng: random.Random, n_chars: int) -> list[str]:
        """About `n_chars` of running text from a random place of a random book of `split`, as sentences."""
        book = rng.choice(self.parts[split])
        start = rng.randrange(max(1, len(book) - n_chars))
        return SENTENCE.split(book[start : start + n_chars])[1:]  # the first is cut mid-sentence


def make_fact(rng: random.Random) -> tuple[list[str], str, str]:
    """A fact as sentences (stated in order), its question, and the answer."""
    name, kind = rng.choice(NAMES), rng.choice(KINDS)
    first = name.split()[0]
    if kind == "hidden":
        thing, place = rng.choice(THINGS), rng.choice(PLACES)
        return [f"{name} hid {thing} in {place}."], f"Where had {first} put {thing} away?", place.split()[-1]
    if kind == "number":
        n = str(rng.randint(11, 989))
        return [f"The door of {name}'s room was marked {n}."], f"Which number was on {first}'s door?", n
    places = rng.sample(PLACES, rng.randint(2, 3))
    moves = [
        f"{name} went to {p}." if i == 0 else f"Then {first} walked to {p}." for i, p in enumerate(places)
    ]
    return moves, f"Where did {first} end up?", places[-1].split()[-1]


def recall_doc(books: BookSplits, tokenizer, rng: random.Random, split: str, n_segments: int, segment: int,
               question_first: bool = False) -> RecallDoc:  # fmt: skip
    """One document of `n_segments` x `segment` tokens with one fact (its sentences in order) in it."""
    width = n_segments * segment
    facts, question, answer = make_fact(rng)
    encode = lambda s: tokenizer.encode(" " + s, add_special_tokens=False)  # noqa: E731
    q_ids = tokenizer.encode(f"\nQuestion: {question}\nAnswer:", add_special_tokens=False)
    pieces = [encode(s) for s in books.sentences(split, rng, width * 6)]
    head = q_ids if question_first else []
    room = width - len(head) - sum(len(encode(f)) for f in facts)
    kept, total = [], 0
    for p in pieces:  # the book's sentences that fit beside the fact
        if total + len(p) > room:
            break
        kept.append(p)
        total += len(p)
    at = sorted(rng.choices(range(len(kept) + 1), k=len(facts)))  # fact sentence i goes before kept[at[i]]
    ids, starts = list(head), []
    for i, p in enumerate([*kept, []]):
        for j in (j for j, a in enumerate(at) if a == i):
            starts.append(len(ids))
            ids += encode(facts[j])
        ids += p
    ids = (ids + [tokenizer.eos_token_id] * width)[:width]  # a short excerpt is padded with end of text
    answer_ids = tokenizer.encode(" " + answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    segments = [ids[k * segment : (k + 1) * segment] for k in range(n_segments)]
    return RecallDoc(segments, q_ids, answer_ids, answer, [s // segment for s in starts])
