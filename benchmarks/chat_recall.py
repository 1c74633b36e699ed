"""Chat recall: facts told early in a long conversation, asked at its end, after the memory was saved and loaded.

python -m benchmarks.chat_recall              # 20 facts in a conversation of 32k tokens (4x SmolLM2's window)
python -m benchmarks.chat_recall --opened     # each reply opened for the model ("Your sister's name is")
python -m benchmarks.chat_recall --tokens 16384 --methods kv

The conversation is framed by the model's chat template as jobs.chat frames it (jobs.chat.Turns): the user's
turns are paragraphs of a book and, at spread depths, facts of different kinds ("Please remember: my sister's
name is Clara."); the assistant's turns are short varied replies (read, not generated, so the benchmark costs
one read). The memory is saved to a file and loaded back, then every fact is asked ("What is my sister's
name?") from the loaded state. Methods: kv, retrieval and archival memory, and the backbone alone with the
conversation truncated to its window.
"""

import json
import random
import tempfile
import time
from pathlib import Path

import torch

from memgpt.names import TEXT_MODEL_SETTINGS

from .common import answers_after, load_methods, parser, print_table, record
from .planted_text import book_text

# (what the user says, the question, the reply opened for --opened, the answers one is drawn from): facts of
# different kinds, as a user tells them; twenty codes alike proved a test of telling codes apart, which the
# 135M backbone fails with the whole conversation in its window
FACTS = [
    ("My sister's name is {}.", "What is my sister's name?", "Your sister's name is", ["Clara", "Ingrid", "Beatrix", "Yolanda"]),
    ("I was born in {}.", "Where was I born?", "You were born in", ["Lisbon", "Winnipeg", "Nairobi", "Tbilisi"]),
    ("My dog is called {}.", "What is my dog called?", "Your dog is called", ["Biscuit", "Nugget", "Pickles", "Waffles"]),
    ("I drive a {}.", "What car do I drive?", "You drive a", ["Volvo", "Subaru", "Peugeot", "Skoda"]),
    ("My locker code is {}.", "What is my locker code?", "Your locker code is", ["4821", "7390", "1657", "9043"]),
    ("I work as a {}.", "What is my job?", "You work as a", ["dentist", "plumber", "librarian", "pilot"]),
    ("I play the {}.", "Which instrument do I play?", "You play the", ["cello", "banjo", "oboe", "harp"]),
    ("My wife is from {}.", "Where is my wife from?", "Your wife is from", ["Osaka", "Quito", "Dublin", "Perth"]),
    ("I am allergic to {}.", "What am I allergic to?", "You are allergic to", ["peanuts", "penicillin", "shellfish", "pollen"]),
    ("My favourite colour is {}.", "What is my favourite colour?", "Your favourite colour is", ["turquoise", "maroon", "lilac", "amber"]),
    ("My son studies {}.", "What does my son study?", "Your son studies", ["chemistry", "geology", "linguistics", "architecture"]),
    ("I live on {} Street.", "Which street do I live on?", "You live on", ["Maple", "Juniper", "Hawthorn", "Willow"]),
    ("My cat is named {}.", "What is my cat's name?", "Your cat is named", ["Pepper", "Mochi", "Ziggy", "Tofu"]),
    ("My best friend is called {}.", "What is my best friend called?", "Your best friend is called", ["Tobias", "Anselm", "Rupert", "Casimir"]),
    ("At home I speak {}.", "Which language do I speak at home?", "At home you speak", ["Portuguese", "Hungarian", "Tagalog", "Welsh"]),
    ("My flight leaves on {}.", "On which day does my flight leave?", "Your flight leaves on", ["Thursday", "Sunday", "Tuesday", "Saturday"]),
    ("My grandmother grew up in {}.", "Where did my grandmother grow up?", "Your grandmother grew up in", ["Krakow", "Valparaiso", "Tromso", "Marseille"]),
    ("My favourite fruit is the {}.", "What is my favourite fruit?", "Your favourite fruit is the", ["mango", "quince", "lychee", "persimmon"]),
    ("My daughter's teacher is Mr. {}.", "What is the name of my daughter's teacher?", "Your daughter's teacher is Mr.", ["Hargreaves", "Okonkwo", "Lindqvist", "Moreau"]),
    ("My bike lock code is {}.", "What is my bike lock code?", "Your bike lock code is", ["2468", "8135", "5702", "3391"]),
]  # fmt: skip
# replies vary, as a real assistant's do: one repeated reply is copied back at the question instead of a code
REPLIES = [
    "That is a vivid passage.", "Thank you for sharing this.", "The writing is dense but rich.",
    "I enjoyed reading that.", "What a scene!", "Interesting; please go on.", "That says a lot about the narrator.",
    "A striking paragraph, full of the sea.",
]  # fmt: skip
REMEMBERED = "Got it, I will remember that."
SYSTEM = "You are a helpful assistant. Remember what the user tells you and answer questions about it."
METHODS = ("kv", "retrieval", "archival", "truncated")
NEW_TOKENS = 16


def conversation(turns, n_tokens: int, n_facts: int, seed: int) -> tuple[list[int], list[dict]]:
    """Token ids of a conversation of about `n_tokens` with `n_facts` facts told at spread depths."""
    rng = random.Random(seed)
    paragraphs = [p.replace("\n", " ") for p in book_text("moby_dick.txt").split("\n\n") if len(p) > 200]
    if n_facts > len(FACTS):
        raise ValueError(f"at most {len(FACTS)} facts")
    facts = [{"said": said.format(a := rng.choice(pool)), "question": q, "opening": opening, "answer": a}
             for said, q, opening, pool in FACTS[:n_facts]]  # fmt: skip
    ids, told, first, i = [], 0, True, rng.randrange(len(paragraphs) // 2)
    while len(ids) < n_tokens:
        depth = len(ids) / n_tokens
        if told < n_facts and depth >= 0.9 * told / n_facts:  # facts spread over the first 90 %
            facts[told]["depth"] = round(depth, 3)
            text, reply, told = "Please remember: " + facts[told]["said"], REMEMBERED, told + 1
        else:
            text, reply, i = paragraphs[i % len(paragraphs)], rng.choice(REPLIES), i + 1
        ids += turns.user(text, first=first) + turns.reply(turns.tokenizer.encode(reply), set())
        first = False
    return ids, facts


def question_ids(model, turns, fact: dict, opened: bool) -> list[int]:
    question = turns.user(fact["question"], first=False) + turns.header
    if (
        opened
    ):  # the reply opened for the model: what is scored is what the memory holds, not its will to answer
        question += model.tokenizer.encode(fact["opening"], add_special_tokens=False)
    return question


def ask(model, state, question: list[int]) -> str:
    """The reply to a question, generated from the memory."""
    return model.reply([question], memory=state, max_new_tokens=NEW_TOKENS)[0].text


def main(argv: list[str] | None = None) -> None:
    from jobs.chat import Turns
    from memgpt import MemoryState, hub

    p = parser(__doc__)
    p.add_argument(
        "--model", default=None, help="an instruct model's HF folder or hub id (default: SmolLM2 offline)"
    )
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--facts", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opened", action="store_true", help="open each reply ('Your sister's name is')")
    p.add_argument(
        "--system", default=SYSTEM, help="the conversation's system prompt ('' for the template's own)"
    )
    p.add_argument(
        "--save", default=str(Path(__file__).parents[1] / "docs" / "benchmark" / "chat_recall.json")
    )
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    rows, answers = [], {}
    settings = {k: v for k, v in TEXT_MODEL_SETTINGS.items() if k != "memory"}
    models = load_methods(args.model, args.methods, **settings)
    for method in args.methods:
        model = models[method]
        turns = Turns.of(model.tokenizer, args.system or None)
        window = hub.position_window(model.backbone.config)
        ids, facts = conversation(turns, args.tokens, args.facts, args.seed)
        start = time.perf_counter()
        questions = [question_ids(model, turns, f, args.opened) for f in facts]
        if method == "truncated":  # the backbone alone on the conversation's last window (room for the reply)
            last = ids[-(window - 64) :]  # room for the longest question and the reply
            replies = answers_after(model, last, questions, NEW_TOKENS)
        else:
            state = model.read([torch.tensor(ids)], progress=True)
            with tempfile.TemporaryDirectory() as tmp:  # saved and loaded, as jobs.chat does across sessions
                state.save(Path(tmp) / "chat.safetensors")
                state = MemoryState.load(Path(tmp) / "chat.safetensors", device=model.device)
            replies = [ask(model, state, q) for q in questions]
        hits = [f["answer"].casefold() in r.casefold() for f, r in zip(facts, replies, strict=True)]
        rows.append({"method": method, "tokens": len(ids), "recalled": f"{sum(hits)}/{len(hits)}",
                     "recall": sum(hits) / len(hits), "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        answers[method] = [{**f, "reply": r, "hit": h} for f, r, h in zip(facts, replies, hits, strict=True)]
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, f"chat recall: {args.facts} facts in {args.tokens:,} tokens of conversation")
    if args.save:
        Path(args.save).write_text(json.dumps(record(results=rows, answers=answers), indent=1))


if __name__ == "__main__":
    main()
