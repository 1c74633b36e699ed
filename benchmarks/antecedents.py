"""Antecedents: the person a pronoun means, in real book text, chapters after the person last appeared.

python -m benchmarks.antecedents                 # 32 excerpts of 20k characters: seconds, no model
python -m benchmarks.antecedents --chars 200000  # book-length excerpts

Facts planted in excerpts of the books (benchmarks/planted_text.py: "Inspector Halvorsen keeps the ledger in
the observatory of Bergen."), about half followed some 2,500 characters later, past the novel's own people, by
"Years later, he moved the ledger to ...". The text is read as the extraction job reads it, chunk by chunk
(2,000 characters, about 512 tokens), through pipeline/entity_states.py; a follow-up counts when its pronoun
resolved to the planted person. Rows: the entity states (rare shared words, then the latest), and the last
person who acted alone. On the same books without plants, how often the two choose differently (each such
choice is printed for reading: there is no gold coreference for the books, docs/knowledge.md judges a sample
by hand).
"""

import random
import re

from pipeline.entity_states import EntityStates
from pipeline.grammar import names_in

from .common import command, machine, parser, print_table
from .planted_text import book_text, planted_corpus

CHUNK = 2000  # characters a chunk: about SmolLM2's 512 tokens


def chunks(text: str, size: int = CHUNK) -> list[tuple[int, str]]:
    """(offset, passage) pieces of about `size` characters, cut after a space."""
    out, at = [], 0
    while at < len(text):
        end = text.find(" ", at + size)
        end = len(text) if end < 0 else end + 1
        out.append((at, text[at:end]))
        at = end
    return out


def resolutions(text: str, rare: int | None = None) -> dict[int, str]:
    """Every subject pronoun of `text` (by its offset) and the person it resolved to, read chunk by chunk."""
    states = EntityStates() if rare is None else EntityStates(rare=rare)
    found = {}
    for at, passage in chunks(text):
        found |= {at + k: v for k, v in states.read(passage, names_in(passage)).items()}
    return found


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--docs", type=int, default=32)
    p.add_argument("--chars", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=8, help="real-text choices where the two differ, to print")
    args = p.parse_args(argv)
    docs = planted_corpus(args.docs, args.chars, 3, seed=args.seed)
    methods = {"entity states": None, "last person who acted": 0}
    rows = []
    for label, rare in methods.items():
        right = n = 0
        for d in docs:
            found = resolutions(d.text, rare)
            for f in d.facts:
                if f.follow_up_start is not None:
                    at = f.follow_up_start + re.search(r"\b(?:he|she)\b", d.text[f.follow_up_start :]).start()
                    n += 1
                    right += f.name in found.get(at, "")
        rows.append(
            {"method": label, "follow-ups resolved": f"{right}/{n}", "share": round(right / max(n, 1), 3)}
        )
    print_table(rows, f"antecedents: {args.docs} excerpts of {args.chars:,} characters, {machine()}")
    rng, shown, differ, total, no_one = random.Random(args.seed), 0, 0, 0, 0
    for book in ("pride_and_prejudice.txt", "moby_dick.txt"):
        text = book_text(book)
        start = rng.randrange(len(text) // 10, len(text) - 100_000)
        text = text[start : start + 100_000]
        ours, last = resolutions(text), resolutions(text, 0)
        total += len(ours)
        no_one += sum(v == "" for v in ours.values())
        for at in sorted(ours):
            if ours[at] != last.get(at):
                differ += 1
                if shown < args.show:
                    shown += 1
                    print(f"  {book}: {text[at : at + 70]!r}: {ours[at] or 'no one'} "
                          f"(the last who acted: {last.get(at)})")  # fmt: skip
    print(f"real text without plants: {differ} of {total} subject pronouns resolved otherwise than to the last "
          f"person who acted, {no_one} of them to no one (no rare word shared, no one of theirs acted lately)")  # fmt: skip
    print(f"command: {command()}")


if __name__ == "__main__":
    main()
