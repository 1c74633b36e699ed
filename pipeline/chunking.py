"""Token-aware chunking with character offsets: chunks of at most `chunk_size` tokens that tile the text."""

from dataclasses import dataclass

import numpy as np

from memgpt.archival import SENTENCE_END


@dataclass(frozen=True)
class Chunk:
    """Tokens `token_ids` of `text[char_start:char_end]`, the `index`-th chunk of its document."""

    index: int
    token_ids: list[int]
    char_start: int
    char_end: int


def tokenize_with_offsets(text: str, tokenizer) -> tuple[list[int], np.ndarray]:
    """Token ids of `text` (no special tokens) and their (N, 2) character offsets, tokenizing once."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False, verbose=False)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # (N, 2)
    return list(enc["input_ids"]), offsets


def cut_points(offsets: np.ndarray, chunk_size: int, text: str | None = None) -> list[int]:
    """Token indices where chunks start, never cutting inside a character (its bytes may span tokens). With
    `text`, a chunk ends where a sentence does within its last eighth, else between words there: a cut inside a
    sentence leaves neither half a clause to copy, and one inside a word ("The heads|man") a name or a subject."""
    n = len(offsets)
    # token k may start a chunk only if it shares no character with token k-1
    ok = np.flatnonzero(offsets[1:, 0] >= offsets[:-1, 1]) + 1
    reach = chunk_size // 8
    starts, pos = [], 0
    while pos < n:
        starts.append(pos)
        limit = pos + chunk_size
        if limit >= n:
            break
        i = np.searchsorted(ok, limit, side="right") - 1
        if i < 0 or ok[i] <= pos:  # no clean cut within reach: cut at the limit
            pos = limit
            continue
        pos = int(ok[i])
        if text is not None:
            lo = np.searchsorted(ok, max(pos - reach, starts[-1]), side="right")
            pos = _best_cut(text, offsets, ok[lo : i + 1][::-1], pos)
    return starts


def _best_cut(text: str, offsets: np.ndarray, clean: np.ndarray, default: int) -> int:
    """Of the clean cuts (last first), the last that starts a sentence, else a word, else `default`."""
    for starts in (_starts_sentence, _starts_word):
        for k in clean:
            if starts(text, int(offsets[k, 0])):
                return int(k)
    return default


def _starts_word(text: str, at: int) -> bool:
    """Whether a token starting at `at` starts a word (byte-level tokens carry the space before it)."""
    return at == 0 or at >= len(text) or text[at - 1].isspace() or text[at].isspace()


def _starts_sentence(text: str, at: int) -> bool:
    """Whether a token starting at `at` starts a sentence or a paragraph: the whitespace around `at` is where
    one ends (`SENTENCE_END`: after ".", "!" or "?" and a closing quote, not after "Mr.", or a blank line)."""
    start, end = at, at
    while start > 0 and text[start - 1].isspace():
        start -= 1
    while end < len(text) and text[end].isspace():
        end += 1
    # a match overlapping the whitespace: its punctuation just before it, or a blank line inside it
    return start < end and any(m.end() > start for m in SENTENCE_END.finditer(text, max(0, start - 4), end))


def chunk_text(text: str, tokenizer, chunk_size: int) -> list[Chunk]:
    """Split `text` into chunks of at most `chunk_size` tokens whose character spans tile `text` exactly."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    ids, offsets = tokenize_with_offsets(text, tokenizer)
    starts = cut_points(offsets, chunk_size, text)
    # a chunk's span runs from its first token's start to the next chunk's first token's start, so the
    # spans tile the text (whitespace a tokenizer skips belongs to the chunk before it)
    char_starts = [0] + [int(offsets[s, 0]) for s in starts[1:]]
    char_ends = char_starts[1:] + [len(text)]
    bounds = starts + [len(ids)]
    return [
        Chunk(i, ids[bounds[i] : bounds[i + 1]], char_starts[i], char_ends[i]) for i in range(len(starts))
    ]
