"""Continue a text: read it into the memory chunk by chunk, then write what comes next to stdout, streamed.

    python -m jobs.continue --input book.txt [--max-new-tokens N] [--sample] [--seed S] [--model PATH]

A text of any length costs linear time and a fixed memory: all of it but its last (partial) chunk is read
into the memory (a progress bar on stderr), and the continuation is generated from that chunk and the memory.
`continue` is a Python keyword: run it with `python -m jobs.continue`.
"""

import argparse
import sys
import time
from pathlib import Path

from jobs.chat import (
    LineStreamer,
    OneLineParser,
    add_model_args,
    check_window,
    generate_options,
    load_model,
    one_line,
    status,
)

PROG = "jobs.continue"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="a UTF-8 text file ('-': standard input)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="length of the continuation, in tokens")
    add_model_args(p)
    p.add_argument("--traceback", action="store_true", help="show the full traceback of a failure")
    return p.parse_args(argv)


def read_text(source: str) -> str:
    """The text to continue; a missing, unreadable or empty one is refused before the model loads."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {source}")
        text = path.read_text(encoding="utf-8", errors="replace")  # a stray byte should not stop a book
    if not text.strip():
        raise ValueError(f"{source} is empty: nothing to continue")
    return text


def continue_text(model, ids, max_new_tokens: int, options: dict, out=None) -> int:
    """Read `ids` (1-D) into memory, stream the continuation to `out`; the number of tokens written."""
    import torch

    C = model.config.chunk_size
    split = (len(ids) - 1) // C * C  # whole chunks into memory; the last 1..C tokens stay the visible prompt
    start = time.perf_counter()
    with torch.inference_mode():  # no graph over the book
        state = model.read([ids[:split]], progress=True) if split else model.init_state(1)
    status(f"{PROG}: read {len(ids):,} tokens in {time.perf_counter() - start:.1f} s")
    prompt = ids[split:].unsqueeze(0)
    start = time.perf_counter()
    with torch.inference_mode():
        seq = model.generate(
            prompt,
            memory=state,
            max_new_tokens=max_new_tokens,
            streamer=LineStreamer(model.tokenizer, out or sys.stdout, single_line=False),
            **options,
        )
    n = seq.shape[1] - prompt.shape[1]
    status(f"{PROG}: wrote {n} tokens in {time.perf_counter() - start:.1f} s")
    return n


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.max_new_tokens < 1:
            raise ValueError("--max-new-tokens must be >= 1")
        text = read_text(args.input)
        import torch

        model = load_model(args, PROG)
        check_window(model, args.max_new_tokens)
        ids = torch.tensor(model.tokenizer.encode(text), dtype=torch.long)
        continue_text(model, ids, args.max_new_tokens, generate_options(model, args))
    except Exception as e:  # one line for the user; --traceback for the details
        if args.traceback:
            raise
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
