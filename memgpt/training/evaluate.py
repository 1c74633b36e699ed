"""Evaluation: summaries generated from memory alone, scored against the planted states."""

import torch

from ..model import MemGPT
from ..state import MemoryState
from . import planted
from .batches import TaskPrompts
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
