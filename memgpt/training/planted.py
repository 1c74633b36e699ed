"""Long documents with planted knowledge (BABILong-style): entities move and get attributes amid filler text.

A document is built chunk by chunk in tokens of a given tokenizer, so every planted sentence lands in a known
chunk of `chunk_size` tokens. Its targets: the final state of every entity (the summary), the facts stated in
each chunk with pronouns resolved to names read earlier, and questions with answers. Scoring functions turn a
generated summary / fact list into state accuracy and fact precision / recall / F1.
"""

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Protocol

from .filler import Filler, default_filler
from .words import BADGE_NAMED, BADGE_PRONOUN, DISTRACTORS, LOCATIONS, MOVE, NAMES, PRONOUNS

MOVED_TO, BADGE = "moved to", "badge number"  # fact relations
SUMMARY_PROMPT = "Summary:"
FACTS_PROMPT = "Facts:"
NO_FACTS = "none"


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class PlantedConfig:
    """Knobs of a planted document. Facts: every entity's first move, its badge, and `n_moves` moves in all."""

    n_chunks: int = 4
    chunk_size: int = 64
    n_entities: int = 3
    n_moves: int | None = None  # None: 2 per entity
    badges: bool = True  # every entity's badge number is stated once
    n_distractors: int = 2  # planted sentences that change no state
    pronoun_prob: float = 0.5  # chance a follow-up fact about the same entity uses "She"/"He"
    badge_digits: int = 2
    max_planted_fraction: float = 0.75  # at most this share of a chunk's tokens is planted text
    names: tuple[str, ...] = tuple(NAMES)
    locations: tuple[str, ...] = LOCATIONS

    def __post_init__(self) -> None:
        if not 1 <= self.n_entities <= len(self.names):
            raise ValueError(f"n_entities must be in 1..{len(self.names)}, got {self.n_entities}")
        if self.n_moves is not None and self.n_moves < self.n_entities:
            raise ValueError(f"n_moves ({self.n_moves}) must be >= n_entities ({self.n_entities})")
        unknown = set(self.names) - set(NAMES)
        if unknown:
            raise ValueError(f"names {sorted(unknown)} have no known pronoun; choose from {sorted(NAMES)}")
        if self.n_chunks < 1 or self.chunk_size < 8:
            raise ValueError(
                f"need n_chunks >= 1 and chunk_size >= 8, got {self.n_chunks}, {self.chunk_size}"
            )

    @property
    def moves(self) -> int:
        return 2 * self.n_entities if self.n_moves is None else self.n_moves


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    object: str
    chunk: int = -1  # the chunk that states it
    span: tuple[int, int] = (0, 0)  # character span of its sentence in the document text

    @property
    def triple(self) -> tuple[str, str, str]:
        return self.subject, self.relation, self.object

    def line(self) -> str:
        return f"- {self.subject} | {self.relation} | {self.object}"


@dataclass
class Document:
    """A planted document: text, its chunks (token ids, `chunk_size` each) and the ground truth."""

    seed: int
    text: str
    chunks: list[list[int]]
    chunk_spans: list[tuple[int, int]]  # character span of each chunk in `text`
    facts: list[Fact]
    state: dict[str, dict[str, str]]  # entity -> {"location": ..., "badge": ...}, in name-pool order
    questions: list[tuple[str, str]] = field(default_factory=list)
    n_pronouns: int = 0

    @property
    def n_tokens(self) -> int:
        return sum(len(c) for c in self.chunks)

    def token_ids(self) -> list[int]:
        return [t for c in self.chunks for t in c]

    def chunk_facts(self, chunk: int) -> list[Fact]:
        return [f for f in self.facts if f.chunk == chunk]

    def summary(self) -> str:
        """The target summary: one `- Name: location, badge N` line per entity."""
        return format_summary(self.state)

    def facts_text(self, chunk: int) -> str:
        """The target fact lines of one chunk (`none` when it states no fact)."""
        return format_facts(self.chunk_facts(chunk))

    def state_after(self, chunk: int) -> dict[str, dict[str, str]]:
        """The state of every entity mentioned in chunks 0..chunk (the summary of that prefix)."""
        return _fold_state([f for f in self.facts if f.chunk <= chunk], list(self.state))


@lru_cache(maxsize=1)
def default_tokenizer():
    """The shipped byte-level BPE tokenizer (memgpt/assets)."""
    from ..hub import load_tokenizer

    return load_tokenizer()


# ---- generation -----------------------------------------------------------------------------------------------


class _Encoder:
    """Token ids of text pieces that each start with a space, so a document's ids are the ids of its pieces."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}

    def __call__(self, piece: str) -> list[int]:
        ids = self.cache.get(piece)
        if ids is None:
            if len(self.cache) >= _ENCODER_CACHE_SIZE:
                self.cache.clear()
            ids = self.cache[piece] = list(self.tokenizer.encode(piece, add_special_tokens=False))
        return ids


_ENCODER_CACHE_SIZE = 200_000  # pieces are filler words and planted sentences: a small, finite set


@lru_cache(maxsize=8)
def _encoder(tokenizer: Tokenizer) -> _Encoder:
    """One encoder per tokenizer, kept across documents: training generates thousands of documents from the
    same few pieces, and tokenizing them again was a tenth of a training step."""
    return _Encoder(tokenizer)


def generate(
    config: PlantedConfig, seed: int, tokenizer: Tokenizer | None = None, filler: Filler | None = None
) -> Document:
    """One planted document, the same for the same (config, seed, tokenizer, filler)."""
    rng = random.Random(seed)
    encode = _encoder(tokenizer or default_tokenizer())
    filler = filler or default_filler()
    sentences = _plan(config, rng)
    chunk_of = _place(config, rng, [len(encode(" " + s.text)) for s in sentences])

    text_parts: list[str] = []
    chunks: list[list[int]] = []
    chunk_spans: list[tuple[int, int]] = []
    facts: list[Fact] = []
    cursor = filler.sentence_start(rng.randrange(len(filler.words)))
    pos = 0  # characters written so far
    for c in range(config.n_chunks):
        planted = [s for s, k in zip(sentences, chunk_of, strict=True) if k == c]
        budget = config.chunk_size - sum(len(encode(" " + s.text)) for s in planted)
        words, cursor = _fill(filler, encode, budget, cursor, first=c == 0)
        # planted sentences go between filler sentences where the chunk has a sentence end, never first
        slots = sorted(rng.choice(_boundaries(words, lo=1 if c == 0 else 0)) for _ in planted)
        pieces: list[tuple[str, _Sentence | None]] = []
        w = 0
        for s, slot in zip(planted, slots, strict=True):
            pieces += [(word, None) for word in words[w:slot]]
            pieces.append((" " + s.text, s))
            w = slot
        pieces += [(word, None) for word in words[w:]]
        ids: list[int] = []
        start = pos
        for piece, s in pieces:
            ids += encode(piece)
            if s is not None:
                facts += [replace(f, chunk=c, span=(pos + 1, pos + len(piece))) for f in s.facts]
            text_parts.append(piece)
            pos += len(piece)
        if len(ids) != config.chunk_size:
            raise AssertionError(f"chunk {c} has {len(ids)} tokens, expected {config.chunk_size}")
        chunks.append(ids)
        chunk_spans.append((start, pos))

    order = [n for n in config.names if any(f.subject == n for f in facts)]
    state = _fold_state(facts, order)
    questions = [(f"Where is {n}?", st["location"]) for n, st in state.items()]
    questions += [(f"What is {n}'s badge number?", st["badge"]) for n, st in state.items() if "badge" in st]
    return Document(
        seed=seed,
        text="".join(text_parts),
        chunks=chunks,
        chunk_spans=chunk_spans,
        facts=facts,
        state=state,
        questions=questions,
        n_pronouns=sum(s.pronoun for s in sentences),
    )


@dataclass
class _Sentence:
    text: str
    subject: str | None  # the entity it is about (None for a distractor without one)
    facts: list[Fact]
    pronoun: bool = False


def _plan(config: PlantedConfig, rng: random.Random) -> list[_Sentence]:
    """The planted sentences in document order, with pronouns resolved into their facts."""
    entities = rng.sample(config.names, config.n_entities)
    events: dict[str, list[tuple[str, str]]] = {}
    for e in entities:
        rest = [(BADGE, _badge(rng, config.badge_digits))] if config.badges else []
        events[e] = [(MOVED_TO, "")] + rest
    for _ in range(config.moves - config.n_entities):
        events[rng.choice(entities)].append((MOVED_TO, ""))
    for e in entities:  # the first move stays first: an entity is placed when it is introduced
        tail = events[e][1:]
        rng.shuffle(tail)
        events[e][1:] = tail

    # episodes: a run of 1-2 events about one entity; later events in a run may say "She"/"He"
    episodes: list[list[_Sentence]] = []
    where: dict[str, str] = {}
    while any(events.values()):
        e = rng.choice([n for n in entities if events[n]])
        run = [events[e].pop(0) for _ in range(min(rng.choice((1, 2, 2)), len(events[e])))]
        episode = []
        for i, (relation, obj) in enumerate(run):
            if relation == MOVED_TO:  # a move always goes somewhere new
                obj = where[e] = rng.choice([x for x in config.locations if x != where.get(e)])
            pronoun = i > 0 and rng.random() < config.pronoun_prob
            episode.append(_fact_sentence(rng, e, relation, obj, pronoun))
        episodes.append(episode)
    for _ in range(config.n_distractors):
        episodes.insert(rng.randint(0, len(episodes)), [_distractor(rng, config, entities)])
    return [s for ep in episodes for s in ep]


def _fact_sentence(rng: random.Random, entity: str, relation: str, obj: str, pronoun: bool) -> _Sentence:
    subj_pronoun, possessive = PRONOUNS[NAMES[entity]]
    if relation == MOVED_TO:
        text = rng.choice(MOVE).format(s=subj_pronoun if pronoun else entity, o=obj)
        fact = Fact(entity, MOVED_TO, obj)
    else:
        text = BADGE_PRONOUN.format(p=possessive, o=obj) if pronoun else BADGE_NAMED.format(s=entity, o=obj)
        fact = Fact(entity, BADGE, obj)
    return _Sentence(text, entity, [fact], pronoun)


def _distractor(rng: random.Random, config: PlantedConfig, entities: list[str]) -> _Sentence:
    template = rng.choice(DISTRACTORS)
    entity = rng.choice(entities) if "{s}" in template else None
    text = template.format(s=entity, o=rng.choice(config.locations), n=_badge(rng, config.badge_digits))
    return _Sentence(text, entity, [])


def _badge(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def _place(config: PlantedConfig, rng: random.Random, lengths: list[int]) -> list[int]:
    """A non-decreasing chunk index per planted sentence, within each chunk's planted-token capacity."""
    capacity = int(config.chunk_size * config.max_planted_fraction)
    if sum(lengths) > capacity * config.n_chunks or max(lengths, default=0) > capacity:
        raise ValueError(
            f"{len(lengths)} planted sentences ({sum(lengths)} tokens) do not fit in {config.n_chunks} chunk(s) "
            f"of {config.chunk_size} tokens at max_planted_fraction={config.max_planted_fraction}"
        )
    for _ in range(1000):
        chunk_of = sorted(rng.randrange(config.n_chunks) for _ in lengths)
        used = [0] * config.n_chunks
        for c, n in zip(chunk_of, lengths, strict=True):
            used[c] += n
        if max(used) <= capacity:
            return chunk_of
    # dense documents: fill chunks in order instead of at random
    chunk_of, c, used = [], 0, 0
    for n in lengths:
        if used + n > capacity:
            c, used = c + 1, 0
        chunk_of.append(c)
        used += n
    return chunk_of


def _boundaries(words: list[str], lo: int) -> list[int]:
    """Insertion points after a sentence end (or at the start), or every point when the chunk has none."""
    ends = [
        i
        for i in range(lo, len(words) + 1)
        if i == 0 or words[i - 1].rstrip("\"'”’)").endswith((".", "!", "?"))
    ]
    return ends or list(range(lo, len(words) + 1))


def _fill(filler: Filler, encode: _Encoder, budget: int, cursor: int, first: bool) -> tuple[list[str], int]:
    """Filler pieces (" word") worth exactly `budget` tokens, read on from `cursor`; words too long are skipped."""
    words: list[str] = []
    n = len(filler.words)
    skipped = 0
    while budget > 0:
        word = filler.words[cursor % n]
        cursor += 1
        piece = word if first and not words else " " + word
        k = len(encode(piece))
        if k <= budget:
            words.append(piece)
            budget -= k
            skipped = 0
        else:
            skipped += 1
            if skipped > n:
                raise ValueError(f"no filler word fits in {budget} token(s)")
    return words, cursor


def _fold_state(facts: Iterable[Fact], order: list[str]) -> dict[str, dict[str, str]]:
    state: dict[str, dict[str, str]] = {}
    for f in facts:
        key = "location" if f.relation == MOVED_TO else "badge"
        state.setdefault(f.subject, {})[key] = f.object
    return {n: state[n] for n in order if n in state}


# ---- targets and scoring --------------------------------------------------------------------------------------


def format_summary(state: Mapping[str, Mapping[str, str]]) -> str:
    lines = []
    for name, st in state.items():
        line = f"- {name}: {st.get('location', 'unknown')}"
        if "badge" in st:
            line += f", badge {st['badge']}"
        lines.append(line)
    return "\n".join(lines)


def format_facts(facts: Iterable[Fact]) -> str:
    return "\n".join(f.line() for f in facts) or NO_FACTS
