"""Helpers for the pipeline and job tests: tiny real models (random, or trained in seconds to emit facts)."""

from pathlib import Path

import pytest
import torch

from memgpt import MemGPT, MemGPTConfig

REPO = Path(__file__).parents[2]
CORPUS = REPO / ".." / "shared" / "corpus"

TINY_LLAMA = {
    "model_type": "llama", "vocab_size": 4096, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
    "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1,
}  # fmt: skip
FACT_LINE = "Elizabeth | visits | the house\n"  # what the trained fact model says after "\nFacts:\n"
SUMMARY = "A story of a family."  # ... and after "Summary:\n"
CHUNK_SIZE = 192


def fact_row(**changes) -> dict:
    """A valid row of the facts table; `changes` override its fields."""
    row = dict(
        doc_id="d",
        subject="Ahab",
        relation="captains",
        object="the Pequod",
        chunk_index=0,
        char_start=0,
        char_end=10,
        score=1.0,
        model="m",
        run_id="r",
    )
    return row | changes


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"shared corpus file {path} not found")
    return path


def random_model(path: Path, seed: int = 0, **options) -> Path:
    """Save a tiny random-init MemGPT to `path`."""
    torch.manual_seed(seed)
    options.setdefault("chunk_size", CHUNK_SIZE)
    MemGPT(
        MemGPTConfig(backbone=TINY_LLAMA, num_slots=2, **options), device="cpu", dtype=torch.float32
    ).save_pretrained(path)
    return path


def train_fact_model(path: Path, text: str, steps: int = 120, max_prefix: int = 48, lr: float = 1e-2) -> Path:
    """A tiny slot MemGPT trained (seconds, CPU) to answer the task prompts with FACT_LINE and SUMMARY, so the
    pipeline's fact path runs on real generated facts. Short prefixes suffice: it still answers after a whole
    chunk and from the memory of earlier chunks (the tests check that it does)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and much faster on a busy machine
    try:
        return _train(path, text, steps, max_prefix, lr)
    finally:
        torch.set_num_threads(threads)


def _train(path: Path, text: str, steps: int, max_prefix: int, lr: float) -> Path:
    torch.manual_seed(0)
    model = MemGPT(
        MemGPTConfig(backbone=TINY_LLAMA, chunk_size=CHUNK_SIZE, num_slots=2),
        device="cpu",
        dtype=torch.float32,
    )
    # a write projection near zero keeps the memory close to M_0 however many chunks are read, so this model's
    # answers do not drift over a book (the slot default, the identity, lets the memory move far from where
    # 60 steps of training saw it); these tests are about the pipeline's fact path, not about what memory holds
    torch.nn.init.normal_(model.memory.proj.weight, std=0.02 / TINY_LLAMA["hidden_size"] ** 0.5)
    tok, eos = model.tokenizer, model.tokenizer.eos_token_id
    ids = tok(text, add_special_tokens=False)["input_ids"]
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    tasks = [
        (enc("\nFacts:\n"), enc(FACT_LINE) + [eos], max_prefix),
        (enc("Summary:\n"), enc(SUMMARY) + [eos], 0),
    ]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        rows, labels = [], []
        for b in range(8):
            prompt, target, max_len = tasks[b % 2]
            start = int(torch.randint(0, len(ids) - 2 * CHUNK_SIZE, (1,), generator=g))
            n = int(torch.randint(0, max_len + 1, (1,), generator=g))
            rows.append(ids[start : start + n] + prompt + target)
            labels.append([-100] * (n + len(prompt)) + target)
        x, y, mask = _pad(rows, 1), _pad(labels, -100), _pad([[1] * len(r) for r in rows], 0)
        with torch.no_grad():  # half the steps start from the memory of an earlier chunk
            memory = model.step(model.init_state(8), torch.tensor([ids[:64]] * 8)) if step % 2 else None
        loss = model(x, mask, memory=memory, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(path)
    return path


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out
