"""Memory overhead: tokens/s of `model.read` with slot and kv memory vs the bare backbone over the same chunks.

python -m benchmarks.overhead           # ~1 minute on 2 CPU cores
python -m benchmarks.overhead --full    # longer documents, more repeats
python -m benchmarks.overhead --profile # where the time goes: torch.profiler's top ops per reader, chunk 128
python -m benchmarks.overhead --backbone qwen2-0.5b --layers 4 --tokens 4096  # a real model's shape, ~2 minutes
"""

import torch

from memgpt import MemGPT, MemGPTConfig

from .common import (
    add_backbone_args,
    backbone_config,
    backbone_label,
    bare_forward,
    command,
    interleaved,
    machine,
    parser,
    print_table,
)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--full", action="store_true")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops instead")
    p.add_argument("--tokens", type=int, default=None, help="document length (default 8192, --full 65536)")
    p.add_argument("--chunk", type=int, default=128, help="chunk size of --profile (default 128)")
    add_backbone_args(p)
    args = p.parse_args()
    backbone = backbone_config(args)
    if args.profile:
        return profile(backbone, args.tokens or 8_192, args.chunk)
    n_tokens, repeat = (65_536, 5) if args.full else (8_192, 3)
    n_tokens = args.tokens or n_tokens
    torch.manual_seed(0)
    doc = torch.randint(2, 4096, (n_tokens,))
    rows = []
    for chunk in (128, 512):
        models = {
            "slots (16)": MemGPT(MemGPTConfig(backbone, memory="slots", chunk_size=chunk, num_slots=16)),
            "kv (budget 512)": MemGPT(MemGPTConfig(backbone, memory="kv", chunk_size=chunk, kv_budget=512)),
        }
        bare = next(iter(models.values()))
        fns = {"bare": lambda b=bare, c=chunk: bare_forward(b, doc, c)}
        fns |= {name: (lambda m=m: m.read([doc])) for name, m in models.items()}
        with torch.inference_mode():
            seconds = interleaved(fns, repeat=repeat)
        for name in models:
            rows.append(
                {
                    "chunk": chunk,
                    "memory": name,
                    "tok/s": n_tokens / seconds[name],
                    "bare tok/s": n_tokens / seconds["bare"],
                    "ratio": seconds["bare"] / seconds[name],
                }
            )
    print_table(
        rows,
        f"read throughput vs bare backbone, {n_tokens} tokens, {backbone_label(args)} (goal: ratio >= 0.9)",
    )
    print(f"machine: {machine()}\ncommand: {command()}")


def profile(backbone: dict, n_tokens: int, chunk: int = 128, rows: int = 12) -> None:
    """torch.profiler's top operators (self CPU time) for the bare backbone, slots and kv over one document."""
    torch.manual_seed(0)
    doc = torch.randint(2, 4096, (n_tokens,))
    slots = MemGPT(MemGPTConfig(backbone, memory="slots", chunk_size=chunk, num_slots=16)).eval()
    kv = MemGPT(MemGPTConfig(backbone, memory="kv", chunk_size=chunk, kv_budget=512)).eval()
    runs = {
        "bare backbone": lambda: bare_forward(slots, doc, chunk),
        "slots (16)": lambda: slots.read([doc]),
        "kv (budget 512)": lambda: kv.read([doc]),
    }
    with torch.inference_mode():
        for name, fn in runs.items():
            fn()  # warm up
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                fn()
            print(f"\n== {name}, {n_tokens} tokens, chunk {chunk}")
            print(
                prof.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40
                )
            )
    print(f"machine: {machine()}\ncommand: {command()}")


if __name__ == "__main__":
    main()
