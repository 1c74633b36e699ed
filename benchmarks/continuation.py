"""Continuing a long text: the loss of a book's true next passage given the memory of everything before it.

python -m benchmarks.continuation                     # Pride and Prejudice, at 16k and 32k tokens
python -m benchmarks.continuation --at 16384 65536 --model path/to/model

At each position the book so far is in memory (kv and retrieval, read chunk by chunk, as `jobs.continue` reads);
the next 256 tokens are scored with the memory, against the backbone alone seeing only the last window of tokens
before them (its best without memory). Also the time to read, and the cost per generated token: `MemGPT.generate`
from the memory against the backbone's plain `generate` over that last window, with its prefill of the window
(what a user of the bare backbone pays) and decoding only.
"""

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from memgpt.names import TEXT_MODEL_SETTINGS

from .common import parser, print_table, record
from .planted_text import book_text

SCORED = 256


def passage_loss(logits: torch.Tensor, target: torch.Tensor) -> float:
    return float(F.cross_entropy(logits[0, :-1].float(), target[1:]))


def last_window(
    model, ids: torch.Tensor, at: int, window: int, new_tokens: int
) -> tuple[float, float, float]:
    """The backbone alone at `at`: its loss on the next SCORED tokens with the last window in context, its cost
    per generated token (the window's prefill shared over the tokens, plus decoding) and decoding's alone."""
    target = ids[at : at + SCORED]
    context = ids[max(0, at - (window - SCORED)) : at + SCORED]
    loss = passage_loss(model.backbone(context[None]).logits[:, -SCORED:], target)
    last = ids[max(0, at - (window - new_tokens)) : at][None]
    t0 = time.perf_counter()  # the window's prefill, then decoding from it, timed apart
    cache = model.backbone(last[:, :-1], use_cache=True).past_key_values
    prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.backbone.generate(last, past_key_values=cache, max_new_tokens=new_tokens, do_sample=False,
                            min_new_tokens=new_tokens, pad_token_id=model.tokenizer.eos_token_id)  # fmt: skip
    decode = (time.perf_counter() - t0) / new_tokens
    return loss, prefill / new_tokens + decode, decode


def with_memory(
    name: str, model, ids: torch.Tensor, at_tokens: list[int], baseline: dict, new_tokens: int
) -> list:
    """The memory read up to each position (only what is new since the last), its loss and cost beside the
    backbone's own at that position."""
    rows, state, read, reading = [], model.init_state(1), 0, 0.0
    for at in at_tokens:
        t0 = time.perf_counter()
        state = model.read([ids[read:at]], memory=state, progress=True)
        read, reading = at, reading + time.perf_counter() - t0
        target = ids[at : at + SCORED]
        loss = passage_loss(model(target[None], memory=state).logits, target)
        prompt = ids[at - 8 : at]  # generation continues from the memory plus the last few tokens
        t0 = time.perf_counter()
        model.generate(
            prompt[None], memory=state, max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1
        )
        ours = (time.perf_counter() - t0) / new_tokens
        truncated, theirs, decode = baseline[at]
        rows.append({"memory": name, "at": at, "loss memory": loss, "loss last window": truncated,
                     "read s": round(reading, 1), "ms/token memory": 1000 * ours,
                     "ms/token last window": 1000 * theirs, "cost ratio": ours / theirs,
                     "ms/token last window, decoding only": 1000 * decode,
                     "cost ratio, decoding only": ours / decode})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    from memgpt import MemGPT, hub
    from memgpt.offline import ensure_smollm2

    p = parser(__doc__)
    p.add_argument("--model", default=None, help="an HF model folder or hub id (default: SmolLM2 offline)")
    p.add_argument("--book", default="pride_and_prejudice.txt")
    p.add_argument("--at", type=int, nargs="+", default=[16384, 32768], help="token positions")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated for the cost figure")
    p.add_argument(
        "--save", default=str(Path(__file__).parents[1] / "docs" / "benchmark" / "continuation.json")
    )
    p.add_argument(
        "--kv-budget",
        type=int,
        default=TEXT_MODEL_SETTINGS["kv_budget"],
        help="entries the memory keeps per layer",
    )
    p.add_argument("--memories", nargs="+", default=["kv", "retrieval"], choices=["kv", "retrieval"])
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    path = args.model or ensure_smollm2()
    models = {
        m: MemGPT.from_pretrained(
            path, memory=m, chunk_size=TEXT_MODEL_SETTINGS["chunk_size"], kv_budget=args.kv_budget
        ).eval()
        for m in args.memories
    }
    first = models[args.memories[0]]
    window = hub.position_window(first.backbone.config)
    ids = torch.tensor(first.tokenizer.encode(book_text(args.book), add_special_tokens=False))
    C, rows = first.config.chunk_size, []
    at_tokens = sorted(a // C * C for a in args.at)
    if at_tokens[-1] + SCORED > len(ids):
        raise ValueError(f"{args.book} has {len(ids)} tokens, fewer than {at_tokens[-1] + SCORED}")
    baseline = {at: last_window(first, ids, at, window, args.new_tokens) for at in at_tokens}
    for name, model in models.items():
        rows += with_memory(name, model, ids, at_tokens, baseline, args.new_tokens)
    print_table(
        rows,
        f"continuation of {args.book}: next {SCORED} tokens, memory (budget {args.kv_budget}) vs last {window} tokens",
    )
    if args.save:
        Path(args.save).write_text(json.dumps(record(results=rows), indent=1))


if __name__ == "__main__":
    main()
