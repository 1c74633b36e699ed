"""Filler: the prose planted facts are set in, with no planted name or place in it."""

import random
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from .words import LOCATIONS, NAMES

_WORD = re.compile(r"[A-Za-z]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class Filler:
    """A stream of filler words (whitespace-free strings) with no planted name or place in them."""

    def __init__(self, words: Sequence[str]):
        if len(words) < 50:
            raise ValueError(f"filler needs at least 50 words, got {len(words)}")
        self.words = list(words)

    def sentence_start(self, index: int) -> int:
        """The index of the first word of the next sentence at or after `index` (wrapping around)."""
        n = len(self.words)
        for i in range(index, index + n):
            if i % n == 0 or self.words[(i - 1) % n].endswith((".", "!", "?")):
                return i % n
        return index % n

    @classmethod
    def from_text(cls, text: str, banned: Iterable[str] = ()) -> "Filler":
        """Filler from any text: sentences mentioning a banned word (names, places, pronoun templates) dropped."""
        banned = {w.lower() for w in banned} | {w.lower() for w in _planted_words()}
        kept = []
        for sentence in _SENTENCE_END.split(" ".join(text.split())):
            if not any(w.lower() in banned for w in _WORD.findall(sentence)):
                kept.append(sentence)
        return cls(" ".join(kept).split())

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> "Filler":
        return cls.from_text("\n".join(Path(p).read_text(encoding="utf-8", errors="replace") for p in paths))

    @classmethod
    def synthetic(cls, n_sentences: int = 4000, seed: int = 0) -> "Filler":
        """Plain generated prose, so nothing outside the project is needed."""
        rng = random.Random(seed)
        subjects = (
            "the old sailor",
            "a young clerk",
            "the farmer",
            "the tall woman",
            "a small boy",
            "the baker",
            "an old dog",
            "the teacher",
            "a quiet man",
            "the gardener's son",
        )
        verbs = (
            "looked at",
            "spoke of",
            "counted",
            "waited for",
            "forgot",
            "painted",
            "carried",
            "talked about",
            "cleaned",
            "watched",
        )
        objects = (
            "the grey sky",
            "a long letter",
            "the morning rain",
            "some bread",
            "the broken wheel",
            "a green coat",
            "the evening bell",
            "an empty cup",
            "the little boat",
            "a basket of apples",
        )
        tails = ("", "", " for a while", " again", " with care", " before noon", " in silence", " all day")
        openers = ("", "", "", "Later, ", "Then ", "In the morning ", "After that ")
        sentences = []
        for _ in range(n_sentences):
            opener = rng.choice(openers)
            subject = rng.choice(subjects)
            s = f"{opener}{subject} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(tails)}."
            sentences.append(s[0].upper() + s[1:])
        return cls.from_text(" ".join(sentences))


@lru_cache(maxsize=1)
def _planted_words() -> frozenset[str]:
    return frozenset(NAMES) | frozenset(LOCATIONS) | {"badge"}


@lru_cache(maxsize=4)
def default_filler() -> Filler:
    return Filler.synthetic()
