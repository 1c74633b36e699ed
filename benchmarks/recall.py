"""Recall from real books: facts stated once in the running text of a novel, asked after it in other words.

python -m benchmarks.recall           # 2k, 4k and 16k tokens, one haystack each: tens of minutes on 2 CPU cores
python -m benchmarks.recall --full    # 2k to 128k tokens, three haystacks each (every book)

Each haystack (benchmarks/haystack.py) holds eight cases: five single facts of different kinds, four keys of
one kind with similar values (one asked), a value superseded later, a two-fact hop. Every question is asked
twice, in the chat template and as plain text after the book. Methods side by side: `full` (the backbone over
the whole text, where it fits its window), `truncated` (the backbone over the last kv_budget + chunk tokens:
the span the memories attend to at once), and the memories `kv`, `retrieval`, `archival`. `passage` is the
backbone given only the case's planted sentences, then the question: what the model does with the right text in
a short context, the most a memory that recalls those sentences can expect of it. The classic passkey in
repeated filler is one more row per length, labelled `passkey-filler`: the easy case, not a result.
Writes recall.md (the table), recall.json (every answer) and recall.png (the heatmap) to --out.
"""

import json
import math
import random
import time
from pathlib import Path

import torch

from jobs.train import parse_overrides
from memgpt.names import TEXT_MODEL_SETTINGS

from .common import answers_after, command, load_methods, machine, parser, print_table, record
from .haystack import BOOKS, TASKS, haystack
from .passkey import QUESTION, passkey_ids, random_key

METHODS = ("full", "truncated", "kv", "retrieval", "archival", "passage")
FORMATS = ("chat", "plain")
PASSKEY = "passkey-filler"
MEMORIES = ("kv", "retrieval", "archival")


def question_ids(tokenizer, question: str, fmt: str) -> list[int]:
    """The question as a user would put it after the book: a chat turn, or plain text."""
    if fmt == "chat":
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    else:
        text = f"\n\nQuestion: {question}\nAnswer:"
    return tokenizer.encode(text, add_special_tokens=False)


def answers(model, method: str, book: list[int], questions: list[list[int]], span: int, window: int,
            max_new_tokens: int) -> tuple[list[str] | None, float, list[str] | None]:  # fmt: skip
    """Each question's greedy answer after `book` by one method, the seconds spent reading the book, and what
    the memory recalled for each question (for a memory that recalls text: archival)."""
    if method in ("full", "truncated"):
        prefix = book if method == "full" else book[-span:]
        if len(prefix) + max(map(len, questions)) + max_new_tokens > window:
            return None, 0.0, None
        return answers_after(model, prefix, questions, max_new_tokens), 0.0, None
    start = time.perf_counter()
    state = model.read([torch.tensor(book)])
    read = time.perf_counter() - start
    replies = [model.reply([q], memory=state, max_new_tokens=max_new_tokens)[0].text for q in questions]
    if not hasattr(model.memory, "recall"):
        return replies, read, None
    recalled = [
        model.tokenizer.decode(model.memory.recall(state.tensors, 0, torch.tensor(q))) for q in questions
    ]
    return replies, read, recalled


def passage_answers(
    model, asked, questions: list[list[int]], max_new_tokens: int
) -> tuple[list[str], float, None]:
    """The backbone given only each case's planted sentences (distractors included), then the question."""
    tok = model.tokenizer
    replies = []
    for (case, _), q in zip(asked, questions, strict=True):
        passage = tok.encode(" ".join(case.needles), add_special_tokens=False)
        replies += answers_after(model, passage, [q], max_new_tokens)
    return replies, 0.0, None


def found(case, recalled: str | None) -> bool | None:
    """Whether every sentence the answer needs was among those recalled (None: the method recalls nothing)."""
    if recalled is None:
        return None
    text = " ".join(recalled.split())
    return all(
        " ".join(needle.split())[:-1] in text for needle in case.needles
    )  # [:-1]: the end mark may differ


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--model", default=None, help="an HF folder, GGUF file or hub id (default: SmolLM2 offline)"
    )
    p.add_argument("--full", action="store_true", help="2k to 128k tokens, three haystacks (books) each")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="haystack sizes in tokens")
    p.add_argument("--haystacks", type=int, default=None, help="haystacks per length (default 1; --full 3)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--tasks", nargs="+", choices=[*TASKS, PASSKEY], default=[*TASKS, PASSKEY])
    p.add_argument("--chunk", type=int, default=TEXT_MODEL_SETTINGS["chunk_size"])
    p.add_argument("--budget", type=int, default=TEXT_MODEL_SETTINGS["kv_budget"])
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks", help="folder for recall.json / .md / .png")
    p.add_argument("--set", nargs="+", default=[], metavar="OPTION=VALUE",
                   help="a model option for every memory, e.g. archive_copy_bias=0 (the value read as YAML)")  # fmt: skip
    p.add_argument("--cost", type=int, metavar="TOKENS",
                   help="instead: time kv and archival reading TOKENS of a book, and answering after it")  # fmt: skip
    args = p.parse_args(argv)
    k = 1024
    lengths = args.lengths or ([2 * k, 4 * k, 8 * k, 16 * k, 32 * k, 64 * k, 128 * k] if args.full
                               else [2 * k, 4 * k, 16 * k])  # fmt: skip
    n_hay = args.haystacks or (3 if args.full else 1)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    options = {
        "chunk_size": args.chunk,
        "kv_budget": args.budget,
        "kv_recent": 256,
        **parse_overrides(args.set),
    }
    models = load_methods(args.model, list(METHODS), **options)
    if args.cost:
        return cost(models, args.cost, args.seed)
    tok = models["full"].tokenizer
    window = int(models["full"].backbone.config.max_position_embeddings)
    span = args.budget + args.chunk
    print(f"{machine()}\nmodel {args.model}: window {window:,}; lengths {lengths}; {n_hay} haystack(s) each")
    rows, t0 = [], time.time()
    real = [t for t in args.tasks if t in TASKS]
    for i, n in enumerate(lengths):
        for j in range(n_hay):
            seed = args.seed + 1000 * i + j
            if real:
                hay = haystack(tok, n, seed, BOOKS[(i + j) % len(BOOKS)], tasks=real)
                book = tok.encode(hay.text, add_special_tokens=False)
                asked = [(c, f) for c in hay.cases for f in FORMATS]
                rows += run_cases(models, args, book, asked, hay.book, span, window)
            if PASSKEY in args.tasks and j == 0:
                rows += run_passkey(models, args, n, seed, span, window)
    write(rows, args.out, t0)


def run_cases(models, args, book, asked, book_name, span, window) -> list[dict]:
    tok = models["full"].tokenizer
    questions = [question_ids(tok, c.question, f) for c, f in asked]
    rows = []
    for method in args.methods:
        start = time.perf_counter()
        if method == "passage":
            replies, read, recalled = passage_answers(models[method], asked, questions, args.max_new_tokens)
        else:
            replies, read, recalled = answers(models[method], method, book, questions, span, window,
                                              args.max_new_tokens)  # fmt: skip
        if replies is None:
            continue
        per_case = (time.perf_counter() - start - read) / len(asked)
        recalled = recalled or [None] * len(asked)
        for (case, fmt), reply, text in zip(asked, replies, recalled, strict=True):
            rows.append({"method": method, "tokens": len(book), "book": book_name, "task": case.task,
                         "kind": case.kind, "depth": round(case.depth, 3), "format": fmt,
                         "question": case.question, "answer": case.answer, "reply": reply,
                         "right": case.right(reply), "wrong_value": case.superseded(reply),
                         "found": found(case, text), "read_s": round(read, 2), "answer_s": round(per_case, 2)})  # fmt: skip
            print(f"{method:9s} {len(book):7,} {case.task:10s} {fmt:5s} {case.right(reply)!s:5s} "
                  f"{case.question!r} -> {reply[:60]!r} [{case.answer}]")  # fmt: skip
    return rows


def cost(models, n: int, seed: int) -> None:
    """Reading `n` tokens of a book with kv and with archival memory, in turns (kv, archival, kv, archival), and
    answering one question after it (archival builds its index on the first) and a second."""
    tok = models["full"].tokenizer
    hay = haystack(tok, n, seed, BOOKS[0], tasks=("single",))
    book = torch.tensor(tok.encode(hay.text, add_special_tokens=False))
    questions = [torch.tensor([question_ids(tok, c.question, "chat")]) for c in hay.cases[:2]]
    reads: dict[str, list[float]] = {"kv": [], "archival": []}
    states = {}
    for _ in range(2):
        for kind in reads:
            start = time.perf_counter()
            states[kind] = models[kind].read([book])
            reads[kind].append(time.perf_counter() - start)
    rows = []
    for kind, state in states.items():
        asked = []
        for q in questions:
            start = time.perf_counter()
            models[kind].generate(q, memory=state, max_new_tokens=16, do_sample=False, min_new_tokens=16)
            asked.append(time.perf_counter() - start)
        host = state.tensors.get("host_tokens")
        rows.append({"memory": kind, "tokens": len(book), "read s": min(reads[kind]),
                     "first answer s": asked[0], "next answer s": asked[1],
                     "host bytes/token": 0 if host is None else host.element_size()})  # fmt: skip
    rows.append({"memory": "archival / kv", "tokens": len(book), "read s": rows[1]["read s"] / rows[0]["read s"],
                 "first answer s": rows[1]["first answer s"] - rows[0]["first answer s"],
                 "next answer s": rows[1]["next answer s"] - rows[0]["next answer s"], "host bytes/token": ""})  # fmt: skip
    print_table(
        rows, f"cost, {machine()} (last row: read ratio; answers: seconds more than kv, 16 new tokens)"
    )
    print(f"command: {command()}")


def run_passkey(models, args, n: int, seed: int, span: int, window: int) -> list[dict]:
    """The classic filler haystack, needle in the middle: the easy case, kept as a labelled row."""
    tok = models["full"].tokenizer
    key = random_key(random.Random(seed))
    ids = passkey_ids(tok, n, 0.5, key).tolist()
    question = tok.encode(QUESTION, add_special_tokens=False)
    book = ids[: -len(question)]  # passkey_ids ends with the question: it is asked after the rest
    rows = []
    for method in (m for m in args.methods if m != "passage"):  # the passkey has no planted sentence apart
        start = time.perf_counter()
        replies, read, _ = answers(models[method], method, book, [question], span, window, 8)
        if replies is None:
            continue
        rows.append({"method": method, "tokens": len(book), "book": "filler", "task": PASSKEY, "kind": "number",
                     "depth": 0.5, "format": "plain", "question": "What is the pass key?", "answer": key,
                     "reply": replies[0], "right": key in replies[0], "wrong_value": False,
                     "read_s": round(read, 2), "answer_s": round(time.perf_counter() - start - read, 2)})  # fmt: skip
        print(f"{method:9s} {len(book):7,} {PASSKEY:10s} {key in replies[0]!s:5s} {replies[0]!r} [{key}]")
    return rows


def write(rows: list[dict], folder: str, t0: float) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    md = table(rows)
    (out / "recall.md").write_text(md + "\n")
    (out / "recall.json").write_text(json.dumps(record(rows=rows),
                                                indent=1))  # fmt: skip
    heatmap(rows, out / "recall.png")
    print(
        f"\n{md}\n\ncommand: {command()}\nwrote {out}/recall.md, recall.json, recall.png in {time.time() - t0:.0f}s"
    )


def bucket(tokens: int) -> int:
    """A haystack's nominal length (2k, 4k, ...): the power of two nearest its token count."""
    return 1 << round(math.log2(tokens))


def table(rows: list[dict]) -> str:
    """Right answers / cases per method, task and length; seconds to read a book and to answer a case."""
    lengths = sorted({bucket(r["tokens"]) for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    tasks = [
        t
        for t in (*TASKS, "all real text", PASSKEY)
        if t == "all real text" or any(r["task"] == t for r in rows)
    ]
    head = "| method | task | " + " | ".join(f"{n // 1024}k" for n in lengths) + " | read s | answer s |"
    lines = [head, "|---|---|" + "---|" * len(lengths) + "---|---|"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        for t in tasks:
            these = [r for r in mine if (r["task"] != PASSKEY if t == "all real text" else r["task"] == t)]
            if not these:
                continue
            cells = []
            for n in lengths:
                got = [r for r in these if bucket(r["tokens"]) == n]
                if not got:
                    cells.append("past the window" if m == "full" else "-")
                    continue
                cell = f"{sum(r['right'] for r in got)}/{len(got)}"
                if t == "superseded":
                    cell += f" (old {sum(r['wrong_value'] for r in got)})"
                cells.append(cell)
            reads = {(r["tokens"], r["book"]): r["read_s"] for r in these}
            read = sum(reads.values()) / sum(t for t, _ in reads) * 1000 if m in MEMORIES else 0.0
            answer = sum(r["answer_s"] for r in these) / len(these)
            label = f"**{t}**" if t == "all real text" else t
            lines.append(f"| {m} | {label} | " + " | ".join(cells) + f" | {read:.2f}/1k tok | {answer:.2f} |")
        searched = [r for r in mine if r.get("found") is not None]
        if searched:  # the search apart from the answer: were the sentences the answer needs recalled?
            cells = []
            for n in lengths:
                got = [r["found"] for r in searched if bucket(r["tokens"]) == n]
                cells.append(f"{sum(got)}/{len(got)}" if got else "-")
            lines.append(f"| {m} | *sentences needed, recalled* | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def heatmap(rows: list[dict], path) -> None:
    """Share right per method (rows) and length (columns), one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({bucket(r["tokens"]) for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    tasks = [t for t in (*TASKS, PASSKEY) if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.9 * len(tasks), 3.2), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        grid = torch.full((len(methods), len(lengths)), float("nan"))
        for a, m in enumerate(methods):
            for b, n in enumerate(lengths):
                got = [
                    r["right"]
                    for r in rows
                    if r["method"] == m and r["task"] == t and bucket(r["tokens"]) == n
                ]
                if got:
                    grid[a, b] = sum(got) / len(got)
                    ax.text(b, a, f"{sum(got)}/{len(got)}", ha="center", va="center", fontsize=7)
        ax.imshow(grid.numpy(), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)), [f"{n // 1024}k" for n in lengths])
        ax.set_yticks(range(len(methods)), methods if ax is axes[0][0] else [""] * len(methods))
        ax.set_title(t)
    fig.suptitle("right answers, facts stated once in real book text (SmolLM2-135M-Instruct)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
