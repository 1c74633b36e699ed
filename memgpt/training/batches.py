"""Batches: planted documents and text windows as token rows with their labels."""

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from . import planted
from .books import BookSplits, recall_doc
from .filler import Filler
from .recipe import TrainConfig


@dataclass
class Seq:
    """Right-padded token rows with their LM labels (-100: no loss)."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)


@dataclass
class Batch:
    chunks: torch.Tensor  # (B, N, C) document tokens
    facts: list[Seq] | None = None  # per chunk: [chunk | "Facts:" | target]
    summaries: list[Seq] | None = (
        None  # per chunk: ["Summary:" | target] (only the last when not every chunk)
    )
    context: Seq | None = None  # [last k chunks | prompt | target], read by the backbone alone
    query: Seq | None = None  # [last chunk | question | answer], with the memory of the chunks (task books)
    docs: list[planted.Document] | None = None


class TaskPrompts:
    """Token ids of the prompts and targets, shared by training and evaluation."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos)
        # the same markers as pipeline.prompts' task style: `<chunk>\nFacts:\n` and `Summary:\n` (the newline
        # opens the target); after raw context the summary marker gets a newline of its own
        self.facts = self.encode("\n" + planted.FACTS_PROMPT)
        self.summary = self.encode(planted.SUMMARY_PROMPT)
        self.context_summary = self.encode("\n" + planted.SUMMARY_PROMPT)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def target(self, text: str) -> list[int]:
        return self.encode("\n" + text) + [self.eos]

    def decode(self, ids: list[int]) -> str:
        """Generated ids up to the first end-of-text."""
        ids = list(ids)
        if self.eos in ids:
            ids = ids[: ids.index(self.eos)]
        return self.tokenizer.decode(ids)

    def seq(self, rows: list[tuple[list[int], list[int]]], lm_prefix: bool = False) -> Seq:
        """(context, target) pairs -> a padded Seq with loss on the target (and on the context if lm_prefix)."""
        width = max(len(c) + len(t) for c, t in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (c, t) in enumerate(rows):
            n = len(c) + len(t)
            ids[i, :n] = torch.tensor(c + t)
            mask[i, :n] = 1
            labels[i, len(c) : n] = torch.tensor(t)
            if lm_prefix:
                labels[i, : len(c)] = torch.tensor(c)
        return Seq(ids, mask, labels)


def planted_batch(
    cfg: TrainConfig,
    prompts: TaskPrompts,
    n_chunks: int,
    seeds: list[int],
    filler: Filler | None,
    context: bool,
) -> Batch:
    pc = cfg.planted_config(n_chunks)
    docs = [planted.generate(pc, s, prompts.tokenizer, filler) for s in seeds]
    chunks = torch.tensor([d.chunks for d in docs], dtype=torch.long)  # (B, N, C)
    facts = [
        prompts.seq(
            [(d.chunks[t] + prompts.facts, prompts.target(d.facts_text(t))) for d in docs], lm_prefix=True
        )
        for t in range(n_chunks)
    ]
    steps = range(n_chunks) if cfg.summary_every_chunk else [n_chunks - 1]
    summaries = [
        prompts.seq(
            [(prompts.summary, prompts.target(planted.format_summary(d.state_after(t)))) for d in docs]
        )
        for t in steps
    ]
    ctx = None
    if context:  # the last k chunks in the context window, then the summary or the last chunk's facts
        rng = random.Random(seeds[0])
        k, ask_facts = rng.randint(1, n_chunks), rng.random() < 0.5
        rows = []
        for d in docs:
            window = d.token_ids()[-k * pc.chunk_size :]
            if ask_facts:
                rows.append((window + prompts.facts, prompts.target(d.facts_text(n_chunks - 1))))
            else:
                rows.append((window + prompts.context_summary, prompts.target(d.summary())))
        ctx = prompts.seq(rows)
    return Batch(chunks, facts, summaries, ctx, docs=docs)


def books_batch(prompts: "TaskPrompts", books: BookSplits, n_chunks: int, chunk_size: int, seeds: list[int],
                question_first: bool) -> Batch:  # fmt: skip
    """Documents of real book text with a fact in each, asked after them (task books): the memory reads every
    segment but the last, which the backbone reads with the question after it, as RMT puts its question."""
    docs = [recall_doc(books, prompts.tokenizer, random.Random(s), "train", n_chunks, chunk_size, question_first)
            for s in seeds]  # fmt: skip
    chunks = torch.tensor([d.segments[:-1] for d in docs], dtype=torch.long).view(
        len(docs), n_chunks - 1, chunk_size
    )
    return Batch(chunks, query=prompts.seq([(d.segments[-1] + d.question, d.answer) for d in docs]))


class TextStream:
    """Token windows of N chunks drawn from text files (memory language modelling)."""

    def __init__(self, files: tuple[str, ...], tokenizer):
        text = "\n".join(Path(f).read_text(encoding="utf-8", errors="replace") for f in files)
        self.tokens = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)

    def batch(self, n_chunks: int, chunk_size: int, seeds: list[int]) -> Batch:
        width = n_chunks * chunk_size
        if len(self.tokens) <= width:
            raise ValueError(f"text has {len(self.tokens)} tokens, fewer than one window of {width}")
        starts = [random.Random(s).randrange(len(self.tokens) - width) for s in seeds]
        return Batch(torch.stack([self.tokens[s : s + width] for s in starts]).view(len(seeds), n_chunks, -1))
