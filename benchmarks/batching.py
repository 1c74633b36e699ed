"""Batching: tokens/s reading B documents of mixed lengths in lockstep vs one at a time (B = 1, 4, 16).

python -m benchmarks.batching          # ~2 minutes on 2 CPU cores
python -m benchmarks.batching --full   # longer documents
"""

import torch

from memgpt import MemGPT, MemGPTConfig

from .common import command, interleaved, machine, parser, print_table


def padding_fraction(lengths: list[int], chunk: int) -> float:
    """Padded positions / all positions when reading these documents in lockstep (what `read` pays)."""
    steps = max((n + chunk - 1) // chunk for n in lengths)
    real = sum(lengths)
    padded = 0
    for t in range(steps):
        widths = [min(chunk, max(0, n - t * chunk)) for n in lengths]
        active = [w for w in widths if w]
        padded += max(active) * len(active) - sum(active)
    return padded / (real + padded)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--full", action="store_true")
    args = p.parse_args()
    scale = 4 if args.full else 1
    g = torch.Generator().manual_seed(0)
    rows = []
    for memory, options in (("slots", {}), ("kv", {"kv_budget": 512})):
        model = MemGPT(MemGPTConfig(memory=memory, chunk_size=256, **options)).eval()
        for B in (1, 4, 16):
            lengths = torch.randint(1_000 * scale, 4_000 * scale, (B,), generator=g).tolist()  # mixed lengths
            docs = [torch.randint(2, 4096, (n,), generator=g) for n in lengths]
            fns = {
                "one at a time": lambda docs=docs, m=model: [m.read([d]) for d in docs],
                "lockstep": lambda docs=docs, m=model: m.read(docs),
            }
            with torch.inference_mode():
                seconds = interleaved(fns, repeat=3)
            total = sum(lengths)
            rows.append(
                {
                    "memory": memory,
                    "B": B,
                    "tokens": total,
                    "one-at-a-time tok/s": total / seconds["one at a time"],
                    "lockstep tok/s": total / seconds["lockstep"],
                    "speed-up": seconds["one at a time"] / seconds["lockstep"],
                    "padding": padding_fraction(lengths, 256),
                }
            )
    print_table(rows, "reading B documents of mixed lengths (1k-4k tokens), chunk 256, default backbone")
    print(f"machine: {machine()}\ncommand: {command()}")


if __name__ == "__main__":
    main()
