"""Ask a book that was read once: answer a question from a memory state kept by `jobs.extract --save-states`.

    python -m jobs.ask --state out/states/book.txt.safetensors "Where does Inspector Halvorsen keep the ledger?"
        [--model PATH_OR_HUB_ID] [--max-new-tokens N]

The state names the model and memory settings that wrote it, so the same model is loaded (the offline SmolLM2
for the default); the book is not read again. The answer streams to standard output. A run with facts keeps
each person's latest facts beside the memory: a question that names a person is followed by the latest of them
that shares its words ("Where does Inspector Halvorsen keep the ledger?" by "Inspector Halvorsen moved the
ledger to the lighthouse at Tromsø."), whose evidence is in the facts table.
"""

import argparse
import re
import sys
from pathlib import Path

from jobs.chat import OneLineParser, generate_options, one_line, status

PROG = "jobs.ask"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question")
    p.add_argument("--state", required=True, help="a memory file written by jobs.extract --save-states")
    p.add_argument("--model", help="the model to answer with (default: the one the state names)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--traceback", action="store_true", help="show the full traceback of a failure")
    return p.parse_args(argv)


def load(state_file: Path, model: str | None):
    """The state and the model it was written by (or `model`), checked against each other."""
    import transformers

    from memgpt import MemGPT, MemoryState
    from memgpt.names import TEXT_MODEL, model_path

    transformers.utils.logging.disable_progress_bar()
    if not state_file.is_file():
        raise FileNotFoundError(f"memory state file not found: {state_file}")
    info = MemoryState.read_info(state_file)
    name = model or info.get("model")
    if name is None:
        raise ValueError(f"{state_file} does not name the model that wrote it; pass --model")
    default = name == TEXT_MODEL and model is None  # written by the default model: load its offline copy
    path = model_path(None if default else name, progress=lambda m: status(f"{PROG}: {m}"))
    lm = MemGPT.from_pretrained(path, **info.get("options", {})).eval()
    state = MemoryState.load(state_file, device=lm.device)
    try:
        lm.check_state(state)
    except ValueError as e:
        raise ValueError(f"{state_file} was not written by model {name!r}: {e}") from None
    return lm, state, info


def with_people(question: str, people: dict[str, list[str]]) -> str:
    """`question`, then for each person it names, the latest of that person's facts that shares the most words
    with it (the latest of all where none does): "... keep the ledger?" gets "... moved the ledger to ...".
    "Halvorsen" names "Inspector Halvorsen" where no other person of the book has that last name."""
    from pipeline.summary import content_words

    last_names: dict[str, list[str]] = {}
    for person in people:
        last_names.setdefault(person.split()[-1], []).append(person)
    named = [p for p in people if _says(question, p)]
    named += [
        ps[0]
        for last, ps in last_names.items()
        if len(ps) == 1 and ps[0] not in named and _says(question, last)
    ]
    if not named:
        return question
    asked = content_words(question)
    chosen = []
    for person in named:
        about = asked - content_words(person)
        facts = people[person]  # oldest first: among equals, the latest wins
        chosen.append(max(reversed(facts), key=lambda f: len(about & content_words(f))))
    # after the question: put before it, the fact was as often passed over for the memory's first place
    return f"{question}\n\nThe latest the book says of it: " + " ".join(chosen)


def _says(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text) is not None


def ask(
    model, state, question: str, max_new_tokens: int, out=None, people: dict[str, list[str]] | None = None
) -> str:
    """The answer to `question` from `state`, streamed to `out` as it is generated; with `people` (person ->
    its latest facts), a question that names a person gets the fact of it that fits the question best."""
    from transformers import TextStreamer

    out = out or sys.stdout
    question = with_people(question, people or {})
    tok = model.tokenizer
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)  # fmt: skip
    else:
        text = f"{question}\n"
    ids = tok.encode(text, add_special_tokens=False)
    streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    streamer.on_finalized_text = lambda piece, stream_end=False: print(piece, end="" if not stream_end else "\n",
                                                                         file=out, flush=True)  # fmt: skip
    options = generate_options(model, argparse.Namespace(sample=False, seed=None))
    (answer,) = model.reply([ids], memory=state, max_new_tokens=max_new_tokens, streamer=streamer, **options)
    return answer.text


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    try:
        with torch.inference_mode():  # not torch.set_grad_enabled: main may run inside another program
            return _answer(args)
    except Exception as e:  # one line for the user; --traceback for the details
        if args.traceback:
            raise
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1


def _answer(args: argparse.Namespace) -> int:
    model, state, info = load(Path(args.state), args.model)
    doc = info.get("doc_id", args.state)
    status(f"{PROG}: {doc}: {int(state.n_read[0]):,} tokens read by {model.name}")
    ask(model, state, args.question, args.max_new_tokens, people=info.get("people"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
