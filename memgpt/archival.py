"""Archival memory: kv memory plus the text of everything read, searched and read again right before a prompt.

As Letta's archival memory, training-free. M_t is kv memory's entries plus, in host memory, every token read
(4 bytes a token). The read g(M_t, q_t): the passages of the text that fit the query best (BM25 over SQLite's
full-text index, words stemmed) are fed to the backbone fresh, in reading order, between the kv entries and
the prompt. A small backbone answers from a short, right context better than from a long one, and the kv
entries it sees are a few hundred tokens of attention sinks and the recent text, not the whole book.

Where the prompt is a chat (it holds the chat template's first token), the passages come as a system turn of
that template before it: a small chat model reads a system turn as what it knows, and text before a chat as
a page it may ignore (on SmolLM2, a fact as a system turn was answered 14 times in 24, as bare text 11).

The query is the prompt's text, without the words its chat template always adds; where the prompt holds no
other word (the reply header of a chat whose question was read into memory), the last text read.

While answering from recalled passages, their words are preferred (`archive_copy_bias` added to their logits,
the prompt's own words left out) and the reply does not start with its end or a line break: a small
model given the right sentence still writes a name of its own ("named the horse Bramble" -> "called the horse
a Bristle"), and after a plain "Answer:" it often ends at once. And unless `archive_attend_heavy`, a prompt
with recalled passages attends to kv memory's sinks and recent entries, not to the entries kept from all over
the text for the attention they received: scattered fragments of a novel are noise to a question about one
sentence.
"""

import bisect
import itertools
import re
import sqlite3

import torch

from . import kv
from .kv import KVMemory
from .memory import BackboneInputs, MemoryKind, register_memory
from .repetition import OnGenerated

SEPARATOR_TOKENS = 4  # the most tokens put between two recalled passages
FRAME_TOKENS = 16  # the most tokens of the chat turn the passages are put in
QUERY_TOKENS = 64  # the last text read that queries the archive when the prompt says nothing
PIECE = 256  # the archive is decoded to text this many tokens at a time
WORD = re.compile(r"\w+")
ROLE = re.compile(r"\s*\w+\s*(\n|$)")  # "user\n": what a chat turn starts with, after its special token
NAME = re.compile(r"\b[A-Z][a-z]{2,}\b")  # a capitalised word: the name a second hop looks for
# a sentence ends after . ! ? (and closing quotes), not after a title or an initial ("Mr. Darcy", "J. Smith")
TITLES = ("Mr", "Mrs", "Ms", "Mx", "Dr", "St", "Mt", "Jr", "Sr", "Col", "Capt", "Gen", "Rev", "Messrs", "Prof", "Lt", "Sgt", "Mme", "Mlle")  # fmt: skip
# the prefix of a sentence-end pattern that keeps "Mr. Darcy" and "J. Smith" in one sentence
NOT_AFTER_TITLE = "".join(rf"(?<!\b{t})" for t in TITLES) + r"(?<!\b[A-Z])"
SENTENCE_END = re.compile(NOT_AFTER_TITLE + r"[.!?][\"'\u201d\u2019)\]]*\s+|\n\s*\n")
# words that carry no topic: left out of a query (BM25 would weigh them little, but they cost every passage)
STOPWORDS = frozenset(
    "a an and are as at be been but by did do does for from had has have he her him his how i in is it its me my "
    "no not of on or our she so than that the their them then there they this to was we were what when where "
    "which who whom whose why will with would you your".split()
)


class ArchivalMemory(KVMemory):
    kind = "archival"

    def __init__(self, *args, tokenizer, embed, passage: int, topk: int, copy_bias: float = 0.0,
                 attend_heavy: bool = True, min_score: float = 0.0, **kwargs):  # fmt: skip
        """`passage`: the most tokens of one recalled sentence; `topk`: sentences recalled per prompt;
        `copy_bias`: added to the logits of the recalled words while answering; `attend_heavy`: whether a
        prompt with recalled passages also attends to the kv entries kept for the attention they received;
        `min_score`: the share of the best sentence's BM25 score another needs to be recalled beside it."""
        super().__init__(*args, **kwargs)
        if tokenizer is None:
            raise ValueError("archival memory needs a tokenizer: it searches the words of the text read")
        self.tokenizer, self.passage, self.topk, self.copy_bias = tokenizer, passage, topk, copy_bias
        self.attend_heavy, self.min_score = attend_heavy, min_score
        self._embed = embed  # the backbone's input embeddings (a callable: not a submodule, so never saved)
        self._template_words = _template_words(tokenizer)
        self._separator = tokenizer.encode("\n\n", add_special_tokens=False)[:SEPARATOR_TOKENS]
        self._chat_start, self._frame = _system_turn(tokenizer)
        self._special = set(tokenizer.all_special_ids)
        self._index: tuple | None = None  # (the archive it was built from, its index): one per state
        self._no_start: torch.Tensor | None = None  # tokens a reply does not start with (built on first use)

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
        inputs.logits_processor = self.prefer(recalled, input_ids, mask)
        if not self.attend_heavy:
            self.hide_heavy(state, inputs.attention_mask, [len(r) > 0 for r in recalled])
        return inputs

    def hide_heavy(
        self, state: dict[str, torch.Tensor], attention_mask: torch.Tensor, rows: list[bool]
    ) -> None:
        """In each row that recalled passages, the kv entries kept for the attention they received (neither
        sinks nor recent) are masked: the prompt attends to the sinks, the recent text and the passages."""
        for b, recalled in enumerate(rows):
            if recalled:
                kept = state["mask"][b].nonzero().flatten()  # the row's entries, in reading order
                attention_mask[b, kept[self.sinks : max(self.sinks, len(kept) - self.recent)]] = 0

    def prefer(
        self, recalled: list[torch.Tensor], prompts: torch.Tensor, mask: torch.Tensor
    ) -> "PreferRecalled":
        """The processor that answers from the recalled passages: each row's recalled words, less its prompt's
        and the frame's tokens, get `copy_bias`; no reply starts with its end or a line break."""
        frame = {*self._frame[0], *self._frame[1], *self._separator, *self._special}
        words = [
            torch.tensor(sorted(set(r.tolist()) - frame - set(p[m.bool()].tolist())), dtype=torch.long)
            for r, p, m in zip(recalled, prompts.cpu(), mask.cpu(), strict=True)
        ]
        return PreferRecalled(words, [len(r) > 0 for r in recalled], self.copy_bias, self.no_start())

    def no_start(self) -> torch.Tensor:
        """The special tokens and the blank tokens that hold a line break (a lone space may come before a number:
        SmolLM2 writes " 1783" as " ", "1", "7", "8", "3")."""
        if self._no_start is None:
            vocab = len(self.tokenizer)
            texts = self.tokenizer.batch_decode([[i] for i in range(vocab)])
            blank = [i for i, t in enumerate(texts) if not t.strip() and "\n" in t]
            self._no_start = torch.tensor(sorted({*blank, *self._special}), dtype=torch.long)
        return self._no_start

    def recall(self, state: dict[str, torch.Tensor], row: int, prompt: torch.Tensor) -> torch.Tensor:
        """The token ids fed before row `row`'s prompt: its best sentences in reading order, (n,)."""
        n = int(state["n_read"][row])
        tokens = state["host_tokens"][row, :n].long()
        query, before = self.query_words(prompt.tolist()), n
        if not query:  # the last text read asks (a chat's last turn): sentences that end before it
            query, before = self.last_words(tokens)
        if n == 0 or not query:
            return torch.zeros(0, dtype=torch.long)
        found = self.search(state, row, tokens, query, before)
        if not found:
            return torch.zeros(0, dtype=torch.long)
        pieces = [self.cut(text, query) for text in found]
        ids = [t for p in pieces for t in (*p, *self._separator)]
        if self._chat_start is not None and bool((prompt == self._chat_start).any()):
            opening, closing = self._frame
            ids = [*opening, *ids[: len(ids) - len(self._separator)], *closing]  # no separator after the last
        return torch.tensor(ids, dtype=torch.long)

    def cut(self, sentence: str, query: list[str]) -> list[int]:
        """The sentence's tokens, at most `passage` of them: where it is longer, those around its query words."""
        ids = self.tokenizer.encode(sentence, add_special_tokens=False)
        if len(ids) <= self.passage:
            return ids
        text = sentence.casefold()
        hits = sorted(m.start() for w in query for m in re.finditer(rf"\b{re.escape(w[:-1] or w)}", text))
        if not hits:
            return ids[: self.passage]
        at = len(self.tokenizer.encode(sentence[: hits[len(hits) // 2]], add_special_tokens=False))
        start = min(max(0, at - self.passage // 3), len(ids) - self.passage)
        return ids[start : start + self.passage]

    def last_words(self, tokens: torch.Tensor) -> tuple[list[str], int]:
        """The words of the last text read that has any (a chat's last user turn, or the last QUERY_TOKENS
        tokens of a text), and the token it starts at."""
        tail = max(0, len(tokens) - 4 * QUERY_TOKENS)
        for first, segment in reversed(self.segments(tokens[tail:])):
            words = self.query_words(segment[-QUERY_TOKENS:].tolist())
            if words:
                return words, tail + first + max(0, len(segment) - QUERY_TOKENS)
        return [], len(tokens)

    def query_words(self, ids: list[int]) -> list[str]:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        found = dict.fromkeys(w for w in WORD.findall(text.casefold()) if w not in STOPWORDS)
        return [w for w in found if w not in self._template_words]

    def search(self, state, row: int, tokens: torch.Tensor, query: list[str], before: int) -> list[str]:
        """At most `topk` sentences read before token `before` that fit `query` best by BM25, in reading order.

        A sentence that fits less than `min_score` as well as the best is left out: the model reads the fact,
        not the fact among lines that share one word with the question. One sentence may be a second hop: the
        best sentence for the query plus the names the best sentence holds, one that holds such a name (a
        question about "the ferryman who carried the letter" finds the ferryman's name, then his daughter)."""
        index, ends = self.index(state, row, tokens)
        last = len(ends) if before >= len(tokens) else bisect.bisect_right(ends, before)
        best = self._match(index, query, last, self.topk)
        if not best:
            return []
        best = [(rowid, body) for rowid, body, score in best if score >= self.min_score * best[0][2]]
        names = [
            w for w in NAME.findall(best[0][1]) if w.casefold() not in query and w.casefold() not in STOPWORDS
        ]
        chosen = dict(best[: max(1, self.topk - 1)])
        if names:
            hops = self._match(index, [*query, *(w.casefold() for w in names)], last, self.topk)
            for rowid, body, _ in hops:
                if rowid not in chosen and any(re.search(rf"\b{n}\b", body) for n in names):
                    chosen[rowid] = body
                    break
        for rowid, body in best:
            if len(chosen) >= self.topk:
                break
            chosen.setdefault(rowid, body)
        return [chosen[r] for r in sorted(chosen)]

    @staticmethod
    def _match(
        index: sqlite3.Connection, words: list[str], last: int, limit: int
    ) -> list[tuple[int, str, float]]:
        """The best `limit` sentences before rowid `last` for any of `words`: (rowid, text, BM25 score), best
        first (SQLite's bm25() is lower for a better fit: its sign is turned)."""
        match = " OR ".join('"' + w.replace('"', "") + '"' for w in dict.fromkeys(words))
        return index.execute(
            "SELECT rowid, body, -bm25(sentences) FROM sentences WHERE sentences MATCH ? AND rowid < ? "
            "ORDER BY bm25(sentences) LIMIT ?",
            (match, last, limit),
        ).fetchall()

    def index(self, state, row: int, tokens: torch.Tensor) -> tuple[sqlite3.Connection, list[int]]:
        """The full-text index of row `row`'s sentences, and the token each sentence ends by.

        Built on first use and kept while the same state is asked again (its questions share one index)."""
        key = (state["host_tokens"].data_ptr(), row, len(tokens), int(tokens.sum()))
        if self._index is not None and self._index[0] == key:
            return self._index[1]
        sentences, ends = [], []
        for first, segment in self.segments(tokens):
            pieces = self.tokenizer.batch_decode([p.tolist() for p in segment.split(PIECE)])
            text, piece_ends = "".join(pieces), list(itertools.accumulate(map(len, pieces)))
            role = ROLE.match(text) if first > 0 else None  # a chat turn's role line is not its text
            for start, end in _sentence_spans(text):
                start = max(start, role.end() if role else 0)
                if end > start and WORD.search(text[start:end]):
                    sentences.append(" ".join(text[start:end].split()))
                    # the token it ends by: a bound, at most PIECE tokens over
                    ends.append(first + min(len(segment), (bisect.bisect_left(piece_ends, end) + 1) * PIECE))
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.execute("CREATE VIRTUAL TABLE sentences USING fts5(body, tokenize='porter unicode61')")
        db.executemany("INSERT INTO sentences(rowid, body) VALUES (?, ?)", enumerate(sentences))
        self._index = (key, (db, ends))
        return db, ends

    def segments(self, tokens: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """The runs of text between special tokens (a chat's turns; a book read as text is one run), each with
        the index of its first token."""
        special = torch.tensor(sorted(self._special), dtype=tokens.dtype)
        cuts = torch.isin(tokens, special).nonzero().flatten().tolist()
        out = []
        for a, b in zip([-1, *cuts], [*cuts, len(tokens)], strict=True):
            if b > a + 1:
                out.append((a + 1, tokens[a + 1 : b]))
        return out


class PreferRecalled(OnGenerated):
    """Adds `bias` to each row's recalled words; in a row that recalled anything, the first token generated is
    not one of `no_start` (the reply's end, a line break). For one generate call."""

    def __init__(self, words: list[torch.Tensor], recalled: list[bool], bias: float, no_start: torch.Tensor):
        self.words, self.recalled, self.bias, self.no_start = words, recalled, bias, no_start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        first = self.generated(input_ids).shape[1] == 0
        scores = scores.clone()
        per_row = scores.shape[0] // len(self.words)  # beams or several sequences per prompt
        for i in range(scores.shape[0]):
            b = i // per_row
            if self.bias and len(self.words[b]):
                scores[i, self.words[b].to(scores.device)] += self.bias
            if first and self.recalled[b]:
                scores[i, self.no_start[self.no_start < scores.shape[1]].to(scores.device)] = -float("inf")
        return scores


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`: cut after . ! ? (and a closing quote) or at a blank line."""
    spans, start = [], 0
    for m in SENTENCE_END.finditer(text):
        if text[start : m.end()].strip():
            spans.append((start, m.end()))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


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


def _system_turn(tokenizer) -> tuple[int | None, tuple[list[int], list[int]]]:
    """The first token of a chat prompt, and the tokens that open and close a system turn of the chat template
    (None and nothing where there is no template, or its turn takes more than FRAME_TOKENS)."""
    if not getattr(tokenizer, "chat_template", None):
        return None, ([], [])
    mark = "\x00passages\x00"
    text = tokenizer.apply_chat_template([{"role": "system", "content": mark}], tokenize=False)
    if text.count(mark) != 1:
        return None, ([], [])
    before, after = text.split(mark)
    opening = tokenizer.encode(before, add_special_tokens=False)
    closing = tokenizer.encode(after, add_special_tokens=False)
    if not opening or len(opening) + len(closing) > FRAME_TOKENS:
        return None, ([], [])
    return opening[0], (opening, closing)


def prompt_room(config) -> int:
    return config.archive_topk * (config.archive_passage + SEPARATOR_TOKENS) + FRAME_TOKENS


def check(config) -> None:
    kv.check(config)
    if config.kv_positions != "cache":
        raise ValueError("memory='archival' needs kv_positions='cache'")
    if min(config.archive_passage, config.archive_topk) < 1:
        raise ValueError("archive_passage and archive_topk must be >= 1")
    if not 0 <= config.archive_min_score <= 1:
        raise ValueError(f"archive_min_score must be in [0, 1], got {config.archive_min_score}")
    if not config.archive_copy_bias >= 0:
        raise ValueError(f"archive_copy_bias must be >= 0, got {config.archive_copy_bias}")


def build(config, backbone, tokenizer=None) -> ArchivalMemory:
    args = kv.kv_arguments(config, backbone, prompt_room(config), " + recalled passages")
    return ArchivalMemory(*args, decay=config.kv_decay, tokenizer=tokenizer, passage=config.archive_passage,
                          embed=lambda ids: backbone.get_input_embeddings()(ids), topk=config.archive_topk,
                          copy_bias=config.archive_copy_bias, attend_heavy=config.archive_attend_heavy,
                          min_score=config.archive_min_score)  # fmt: skip


register_memory(
    MemoryKind(
        "archival",
        build,
        check=check,
        size=lambda config: config.kv_budget,
        prompt_room=prompt_room,
        layer_first=kv.LAYOUT["layer_first"],
        entry_dims={**kv.LAYOUT["entry_dims"], "host_tokens": 1},
        entries=kv.LAYOUT["entries"],
    )
)
