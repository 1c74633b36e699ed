"""Planted facts in book text, asked at the end: can the memory give back a detail read long ago?

python -m benchmarks.planted_qa                       # 4 excerpts of ~6k and ~16k tokens, 3 facts each
python -m benchmarks.planted_qa --opened              # each answer opened ("Inspector Halvorsen keeps the ledger in")
python -m benchmarks.planted_qa --text                # asked in plain text after the book, the answer opened
python -m benchmarks.planted_qa --tokens 6000 32000 --docs 6

Facts like "Inspector Halvorsen keeps the ledger in the observatory of Bergen." are planted at random depths
of excerpts of Pride and Prejudice and Moby Dick; about half are changed later by a pronoun sentence ("Years
later, he moved the ledger to the lighthouse at Tromsø."): the right answer is then the later place. At the
end each fact is asked ("Where does Inspector Halvorsen keep the ledger?", SmolLM2's chat template) and the
answer is right when it names the final place and not the superseded one. Side by side: full attention (only
where the excerpt fits the window), the backbone on the last window (truncated), kv memory, kv + retrieval.
"""

import json
import re
import time
from pathlib import Path

import torch

from memgpt.names import TEXT_MODEL_SETTINGS

from .common import answers_after, load_methods, parser, print_table, record
from .planted_text import place_words, planted_corpus

SETTINGS = {k: v for k, v in TEXT_MODEL_SETTINGS.items() if k != "memory"}  # chunk and budget

METHODS = ("full", "truncated", "kv", "retrieval")


def question_ids(tok, fact, opened: bool, plain: bool = False) -> list[int]:
    if plain:  # the book's text goes on into the question and the opened answer, as the passkey is asked
        text = f"\n\nQuestion: {fact.question}\nAnswer: {fact.person} keeps the {fact.thing} in"
        return tok.encode(text, add_special_tokens=False)
    text = tok.apply_chat_template([{"role": "user", "content": fact.question}], tokenize=False,
                                   add_generation_prompt=True)  # fmt: skip
    if opened:  # the answer opened for the model: what is scored is what it read, not its will to answer
        text += f"{fact.person} keeps the {fact.thing} in"
    return tok.encode(text, add_special_tokens=False)


def right(answer: str, fact) -> bool:
    words = set(re.findall(r"\w+", answer.casefold()))
    wrong = (
        place_words(fact.place) - place_words(fact.final_place) if fact.place != fact.final_place else set()
    )
    return bool(place_words(fact.final_place) & words) and not (wrong & words)


def answers(model, method: str, doc_ids: list[int], questions: list[list[int]], window: int) -> list[str]:
    if method in ("full", "truncated"):  # the document (or its last window) computed once for every question
        room = window - 40 - max(map(len, questions))
        return answers_after(model, doc_ids[-room:] if method == "truncated" else doc_ids, questions, 32)
    state = model.read([torch.tensor(doc_ids)])
    return [model.reply([q], memory=state, max_new_tokens=32)[0].text for q in questions]


def main(argv: list[str] | None = None) -> None:
    from memgpt import hub

    p = parser(__doc__)
    p.add_argument("--tokens", type=int, nargs="+", default=[6000, 16000], help="excerpt lengths, about")
    p.add_argument("--docs", type=int, default=4, help="excerpts per length")
    p.add_argument("--facts", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", action="store_true",
                   help="ask in plain text after the book, the answer opened, not through the chat template")  # fmt: skip
    p.add_argument(
        "--opened", action="store_true", help="open each answer ('Inspector Halvorsen keeps the ledger in')"
    )
    p.add_argument(
        "--save", default=str(Path(__file__).parents[1] / "docs" / "benchmark" / "planted_qa.json")
    )
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    models = load_methods(None, args.methods, **SETTINGS)
    tok = next(iter(models.values())).tokenizer
    window = hub.position_window(next(iter(models.values())).backbone.config)
    rows, examples = [], []
    for n_tokens in args.tokens:
        docs = planted_corpus(
            args.docs, n_tokens * 4, args.facts, seed=args.seed + n_tokens
        )  # ~4 chars a token
        for method in args.methods:
            hits, n, start = 0, 0, time.perf_counter()
            for d in docs:
                doc_ids = tok.encode(d.text, add_special_tokens=False)
                questions = [question_ids(tok, f, args.opened, args.text) for f in d.facts]
                if method == "full" and len(doc_ids) + max(map(len, questions)) + 32 > window:
                    break
                for f, a in zip(
                    d.facts, answers(models[method], method, doc_ids, questions, window), strict=True
                ):
                    hits, n = hits + right(a, f), n + 1
                    examples.append({"tokens": len(doc_ids), "method": method, "question": f.question,
                                     "final": f.final_place, "answer": a})  # fmt: skip
            if n:
                rows.append({"tokens": n_tokens, "method": method, "right": f"{hits}/{n}", "accuracy": hits / n,
                             "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    print_table(
        rows, f"planted facts asked at the end ({args.docs} excerpts x {args.facts} facts per length)"
    )
    if args.save:
        Path(args.save).write_text(json.dumps(record(results=rows, examples=examples), indent=1))


if __name__ == "__main__":
    main()
