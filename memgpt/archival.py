"""Archival memory: kv memory plus the text of everything read, searched and read again right before a prompt.

As Letta's archival memory, training-free. M_t is kv memory's entries plus, in host memory, every token read
(4 bytes a token). The read g(M_t, q_t): the passages of the text that fit the query best (BM25 over SQLite's
full-text index, words stemmed) are fed to the backbone fresh, in reading order, between the kv entries and
the prompt. A small backbone answers from a short, right context better than from a long one, and the kv
entries it sees are a few hundred tokens of attention sinks and the recent text, not the whole book.

The query is the prompt's text, without the words its chat template always adds; where the prompt holds no
other word (the reply header of a chat whose question was read into memory), the last text read.
"""

import re
import sqlite3

import torch

from .config import SEPARATOR_TOKENS
from .kv import KVMemory
from .memory import BackboneInputs

QUERY_TOKENS = 64  # the last text read that queries the archive when the prompt says nothing
WORD = re.compile(r"\w+")
# words that carry no topic: left out of a query (BM25 would weigh them little, but they cost every passage)
STOPWORDS = frozenset(
    "a an and are as at be been but by did do does for from had has have he her him his how i in is it its me my "
    "no not of on or our she so than that the their them then there they this to was we were what when where "
    "which who whom whose why will with would you your".split()
)


class ArchivalMemory(KVMemory):
    kind = "archival"

    def __init__(self, *args, tokenizer, embed, passage: int, topk: int, **kwargs):
        super().__init__(*args, **kwargs)
        if tokenizer is None:
            raise ValueError("archival memory needs a tokenizer: it searches the words of the text read")
        self.tokenizer, self.passage, self.topk = tokenizer, passage, topk
        self._embed = embed  # the backbone's input embeddings (a callable: not a submodule, so never saved)
        self._template_words = _template_words(tokenizer)
        self._separator = tokenizer.encode("\n\n", add_special_tokens=False)[:SEPARATOR_TOKENS]
        self._index: tuple | None = None  # (the archive it was built from, its index): one per state

    def init(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        state = super().init(batch_size, device, dtype)
        state["host_tokens"] = torch.zeros(batch_size, 0, dtype=torch.int32)  # every token read, (B, N)
        return state

    def update(self, state, inputs, hidden, mask, attentions) -> dict[str, torch.Tensor]:
        new = super().update(state, inputs, hidden, mask, attentions)
        new["host_tokens"] = _append(state["host_tokens"], state["n_read"].cpu(), inputs.input_ids, mask)
        return new

    def read_inputs(self, state, embeds, mask, write, input_ids=None) -> BackboneInputs:
        if write or input_ids is None:
            return super().read_inputs(state, embeds, mask, write, input_ids)
        recalled = [self.recall(state, b, input_ids[b][mask[b].bool()]) for b in range(len(input_ids))]
        width = max(map(len, recalled))
        if width == 0:
            return super().read_inputs(state, embeds, mask, write, input_ids)
        ids = torch.zeros(len(recalled), width, dtype=torch.long)
        prefix_mask = torch.zeros(len(recalled), width, dtype=mask.dtype)
        for b, r in enumerate(recalled):  # left-padded: every row's passages end where its prompt starts
            if len(r):
                ids[b, -len(r) :], prefix_mask[b, -len(r) :] = r, 1
        ids, prefix_mask = ids.to(embeds.device), prefix_mask.to(mask.device)
        both = torch.cat([self._embed(ids).to(embeds.dtype), embeds], dim=1)  # (B, W + T, D)
        inputs = super().read_inputs(state, both, torch.cat([prefix_mask, mask], dim=1), write, None)
        inputs.text = slice(width, width + embeds.shape[1])
        return inputs

    def recall(self, state: dict[str, torch.Tensor], row: int, prompt: torch.Tensor) -> torch.Tensor:
        """The token ids fed before row `row`'s prompt: its best passages in reading order, (n,)."""
        n = int(state["n_read"][row])
        tokens = state["host_tokens"][row, :n].long()
        query, before = self.query_words(prompt.tolist()), n
        if not query:  # the last text read asks: passages that end before it (not the question itself)
            query, before = self.query_words(tokens[-QUERY_TOKENS:].tolist()), n - QUERY_TOKENS
        if n == 0 or not query:
            return torch.zeros(0, dtype=torch.long)
        spans = self.search(state, row, tokens, query, before)
        pieces = []
        for start, end in spans:
            pieces += [tokens[start:end], torch.tensor(self._separator, dtype=torch.long)]
        return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)

    def query_words(self, ids: list[int]) -> list[str]:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        found = dict.fromkeys(w for w in WORD.findall(text.casefold()) if w not in STOPWORDS)
        return [w for w in found if w not in self._template_words]

    def search(
        self, state, row: int, tokens: torch.Tensor, query: list[str], before: int
    ) -> list[tuple[int, int]]:
        """The token spans of the `topk` passages ending by token `before` that fit `query` best by BM25,
        merged where they touch, in reading order."""
        step = self.passage
        index = self.index(state, row, tokens)
        match = " OR ".join('"' + w.replace('"', "") + '"' for w in query)
        last = max(0, before - 2 * step) // step  # the last passage that ends by `before`
        best = index.execute(
            "SELECT rowid FROM passages WHERE passages MATCH ? AND rowid <= ? ORDER BY bm25(passages) LIMIT ?",
            (match, last, self.topk),
        ).fetchall()
        spans: list[tuple[int, int]] = []
        for start, end in sorted((r * step, min(r * step + 2 * step, len(tokens))) for (r,) in best):
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        return spans

    def index(self, state, row: int, tokens: torch.Tensor) -> sqlite3.Connection:
        """The full-text index of row `row`'s passages (windows of 2 * passage tokens, one every `passage`).

        Built on first use and kept while the same state is asked again (its questions share one index)."""
        key = (state["host_tokens"].data_ptr(), row, len(tokens), int(tokens.sum()))
        if self._index is not None and self._index[0] == key:
            return self._index[1]
        pieces = self.tokenizer.batch_decode(
            [p.tolist() for p in tokens.split(self.passage)], skip_special_tokens=True
        )
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.execute("CREATE VIRTUAL TABLE passages USING fts5(body, tokenize='porter unicode61')")
        texts = [a + b for a, b in zip(pieces, pieces[1:] + [""], strict=True)]
        db.executemany("INSERT INTO passages(rowid, body) VALUES (?, ?)", enumerate(texts))
        self._index = (key, db)
        return db


def _append(archive: torch.Tensor, at: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`archive` (B, N) with each row's real chunk tokens written from its `at` (the tokens it had read)."""
    counts = mask.sum(-1).cpu()
    end = at + counts
    out = archive
    if int(end.max()) > archive.shape[1]:
        out = archive.new_zeros(archive.shape[0], int(end.max()))
        out[:, : archive.shape[1]] = archive
    else:
        out = archive.clone()  # states are values: an older state keeps its archive
    rows = ids.cpu()[mask.cpu().bool()].to(torch.int32).split(counts.tolist())
    for b, r in enumerate(rows):
        out[b, int(at[b]) : int(end[b])] = r
    return out


def _template_words(tokenizer) -> frozenset[str]:
    """The words a chat template adds around any message (roles, a default system prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        return frozenset()
    text = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    return frozenset(WORD.findall(text.casefold()))
