"""Evaluation: summaries generated from memory alone, scored against the planted states."""

import random

import torch

from ..model import MemGPT
from ..state import MemoryState
from . import planted
from .batches import TaskPrompts
from .books import BookSplits, RecallDoc, recall_doc
from .recipe import TrainConfig
from .scoring import state_accuracy


@torch.no_grad()
def summarize(model: MemGPT, state: MemoryState, prompts: TaskPrompts, max_new_tokens: int = 64) -> list[str]:
    """Generate each document's summary from its memory alone."""
    replies = model.reply([prompts.summary] * state.batch_size, memory=state, max_new_tokens=max_new_tokens,
                          eos_token_id=prompts.eos)  # fmt: skip
    return [r.text for r in replies]


@torch.no_grad()
def read_chunks(model: MemGPT, docs: list[planted.Document], last: int | None = None) -> MemoryState:
    """Read the documents (equal numbers of chunks) into memory, chunk by chunk; only the `last` chunks if set."""
    chunks = torch.tensor([d.chunks for d in docs], dtype=torch.long)  # (B, N, C)
    state = model.init_state(len(docs))
    for t in range(chunks.shape[1] - (last or chunks.shape[1]), chunks.shape[1]):
        state = model.step(state, chunks[:, t])
    return state


@torch.no_grad()
def planted_accuracy(model: MemGPT, cfg: TrainConfig, n_docs: int, seed: int = 10_000_019) -> float:
    """State accuracy of summaries generated from memory, on fresh documents at the trained length."""
    model.eval()
    prompts = TaskPrompts(model.tokenizer)
    pc = cfg.planted_config(cfg.max_chunks)
    docs = [planted.generate(pc, seed + i, prompts.tokenizer) for i in range(n_docs)]
    accs = []
    for i in range(0, n_docs, 16):
        part = docs[i : i + 16]
        for doc, text in zip(part, summarize(model, read_chunks(model, part), prompts), strict=True):
            accs.append(state_accuracy(text, doc.state))
    return sum(accs) / len(accs)


@torch.no_grad()
def recall_accuracy(model: MemGPT, docs: list[RecallDoc], only_last: bool = False) -> float:
    """The share of held-out documents (`held_out_docs`) whose answer the model gives after reading them: every
    answer token its greedy choice after the last segment, the question and the answer's tokens before it (what
    greedy decoding writes first). `only_last`: the baseline without memory: the last segment and the question
    alone."""
    model.eval()
    prompts = TaskPrompts(model.tokenizer)
    state = read_segments(model, docs, only_last)
    query = prompts.seq([(d.segments[-1] + d.question, d.answer[:-1]) for d in docs])  # the answer's words
    logits = model(query.ids, query.mask, memory=state).logits
    labels = query.labels[:, 1:].to(logits.device)
    wrong = (logits[:, :-1].argmax(-1) != labels) & (labels != -100)
    return float((~wrong.any(-1)).float().mean())


def held_out_docs(model: MemGPT, books: BookSplits, n_segments: int, n_docs: int, seed: int = 20_000_003,
                  question_first: bool = False) -> list[RecallDoc]:  # fmt: skip
    """The same held-out documents for every model with this chunk size and seed."""
    return [recall_doc(books, model.tokenizer, random.Random(seed + i), "held_out", n_segments,
                       model.config.chunk_size, question_first) for i in range(n_docs)]  # fmt: skip


@torch.no_grad()
def read_segments(model: MemGPT, docs: list[RecallDoc], only_last: bool = False) -> MemoryState:
    """The memory after every segment but the last (which the query holds); `only_last`: nothing read."""
    chunks = torch.tensor([d.segments for d in docs], dtype=torch.long)  # (B, N, C)
    state = model.init_state(len(docs))
    for t in range(0 if not only_last else chunks.shape[1] - 1, chunks.shape[1] - 1):
        state = model.step(state, chunks[:, t])
    return state


def recall_curve(model: MemGPT, cfg: TrainConfig, books: BookSplits, n_docs: int = 32) -> dict[str, float]:
    """Held-out accuracy at each of `cfg.eval_segments` lengths: with the memory, and reading the last segment
    only (what the same model answers without memory)."""
    out = {}
    for n in cfg.eval_segments:
        docs = held_out_docs(model, books, n, n_docs, question_first=cfg.question_first)
        out[f"memory@{n}"] = recall_accuracy(model, docs)
        out[f"last@{n}"] = recall_accuracy(model, docs, only_last=True)
    model.train()
    return out
