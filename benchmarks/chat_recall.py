"""Chat recall: facts told early in a long conversation, asked at its end, after the memory was saved and loaded.

python -m benchmarks.chat_recall              # 20 facts in a conversation of 32k tokens (4x SmolLM2's window)
python -m benchmarks.chat_recall --tokens 16384 --methods kv

The conversation is framed by the model's chat template as jobs.chat frames it (jobs.chat.Turns): the user's
turns are paragraphs of a book and, at spread depths, facts ("Please remember: my locker code is 4821."); the
assistant's turns are short acknowledgements (read, not generated, so the benchmark costs one read). The
memory is saved to a file and loaded back, then every fact is asked ("What is my locker code?") from the loaded
state. Methods: kv and retrieval memory, and the backbone alone with the conversation truncated to its window.
"""

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from .common import command, machine, print_table
from .planted_text import book_text

THINGS = [
    "locker", "bike lock", "garage door", "hotel safe", "suitcase", "mailbox", "gym locker", "alarm", "office door",
    "storage unit", "gate", "phone", "laptop", "school locker", "padlock", "piggy bank", "diary", "cabinet",
    "basement door", "boat lock",
]  # fmt: skip
FACT = "Please remember: my {thing} code is {code}."
QUESTION = "What is my {thing} code?"
ACK = "Noted."
METHODS = ("kv", "retrieval", "truncated")


def conversation(turns, n_tokens: int, n_facts: int, seed: int) -> tuple[list[int], list[dict]]:
    """Token ids of a conversation of about `n_tokens` with `n_facts` facts told at spread depths."""
    rng = random.Random(seed)
    paragraphs = [p.replace("\n", " ") for p in book_text("moby_dick.txt").split("\n\n") if len(p) > 200]
    facts = [{"thing": t, "code": str(rng.randrange(1000, 10000))} for t in THINGS[:n_facts]]
    ids, told, first, i = [], 0, True, rng.randrange(len(paragraphs) // 2)
    while len(ids) < n_tokens:
        depth = len(ids) / n_tokens
        if told < n_facts and depth >= 0.9 * told / n_facts:  # facts spread over the first 90 %
            facts[told]["depth"] = round(depth, 3)
            text, told = FACT.format(**facts[told]), told + 1
        else:
            text, i = paragraphs[i % len(paragraphs)], i + 1
        ids += turns.user(text, first=first) + turns.reply(turns.tokenizer.encode(ACK), set())
        first = False
    return ids, facts


def ask(model, state, turns, fact: dict, method: str, history: list[int], window: int) -> str:
    question = turns.user(QUESTION.format(**fact), first=False) + turns.header
    tok = model.tokenizer
    if method == "truncated":  # the backbone alone, the conversation's last window
        context = torch.tensor([(history + question)[-(window - 16) :]])
        out = model.backbone.generate(
            context, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id
        )
        return tok.decode(out[0, context.shape[1] :], skip_special_tokens=True)
    out = model.generate(torch.tensor([question]), memory=state, max_new_tokens=8, do_sample=False)
    return tok.decode(out[0, len(question) :], skip_special_tokens=True)


def main(argv: list[str] | None = None) -> None:
    from jobs.chat import Turns
    from memgpt import MemGPT, MemoryState, hub
    from memgpt.offline import ensure_smollm2

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--facts", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--save", default=str(Path(__file__).parents[1] / "docs" / "benchmark" / "chat_recall.json")
    )
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    rows, answers = [], {}
    for method in args.methods:
        memory = "kv" if method == "truncated" else method
        model = MemGPT.from_pretrained(ensure_smollm2(), memory=memory, chunk_size=512, kv_budget=1024).eval()
        turns = Turns.of(model.tokenizer)
        window = hub.position_window(model.backbone.config)
        ids, facts = conversation(turns, args.tokens, args.facts, args.seed)
        start = time.perf_counter()
        state = None
        if method != "truncated":
            state = model.read([torch.tensor(ids)], progress=True)
            with tempfile.TemporaryDirectory() as tmp:  # saved and loaded, as jobs.chat does across sessions
                state.save(Path(tmp) / "chat.safetensors")
                state = MemoryState.load(Path(tmp) / "chat.safetensors", device=model.device)
        replies = [ask(model, state, turns, f, method, ids, window) for f in facts]
        hits = [f["code"] in r for f, r in zip(facts, replies, strict=True)]
        rows.append({"method": method, "tokens": len(ids), "recalled": f"{sum(hits)}/{len(hits)}",
                     "recall": sum(hits) / len(hits), "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        answers[method] = [{**f, "reply": r, "hit": h} for f, r, h in zip(facts, replies, hits, strict=True)]
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, f"chat recall: {args.facts} facts in {args.tokens:,} tokens of conversation")
    if args.save:
        record = {"command": command(), "machine": machine(), "results": rows, "answers": answers}
        Path(args.save).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
