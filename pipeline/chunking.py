"""Token-aware chunking with character offsets: chunks of at most `chunk_size` tokens that tile the text."""

from dataclasses import dataclass

import numpy as np


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


def cut_points(offsets: np.ndarray, chunk_size: int) -> list[int]:
    """Token indices where chunks start, never cutting inside a character (its bytes may span tokens)."""
    n = len(offsets)
    # token k may start a chunk only if it shares no character with token k-1
    ok = np.flatnonzero(offsets[1:, 0] >= offsets[:-1, 1]) + 1
    starts, pos = [], 0
    while pos < n:
        starts.append(pos)
        limit = pos + chunk_size
        if limit >= n:
            break
        i = np.searchsorted(ok, limit, side="right") - 1
        pos = int(ok[i]) if i >= 0 and ok[i] > pos else limit  # no clean cut within reach: cut at the limit
    return starts


def chunk_text(text: str, tokenizer, chunk_size: int) -> list[Chunk]:
    """Split `text` into chunks of at most `chunk_size` tokens whose character spans tile `text` exactly."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    ids, offsets = tokenize_with_offsets(text, tokenizer)
    starts = cut_points(offsets, chunk_size)
    # a chunk's span runs from its first token's start to the next chunk's first token's start, so the
    # spans tile the text (whitespace a tokenizer skips belongs to the chunk before it)
    char_starts = [0] + [int(offsets[s, 0]) for s in starts[1:]]
    char_ends = char_starts[1:] + [len(text)]
    bounds = starts + [len(ids)]
    return [
        Chunk(i, ids[bounds[i] : bounds[i + 1]], char_starts[i], char_ends[i]) for i in range(len(starts))
    ]
