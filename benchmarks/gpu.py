"""On a GPU: a ~0.5B-parameter backbone (Qwen2-0.5B's shape, built from its config) in bf16.

1. tokens/s reading a batch of documents with slot and kv memory, and the same as a fraction of the bare
   backbone's forward over the same chunks (no memory);
2. peak GPU memory (`torch.cuda.max_memory_allocated`) reading a 1M-token document vs a 10k-token one.

    python -m benchmarks.gpu                     # one CUDA device, a few minutes
    python -m benchmarks.gpu --long 100000       # a shorter long document
    python -m benchmarks.gpu --layers 1 --batch 2 --tokens 2048 --long 20000   # a quick check on a CPU
"""

import argparse
import time

import torch

from memgpt import MemGPT, MemGPTConfig

from .common import backbone_config, bare_forward, command, interleaved, machine, parser, print_table, sync

SHORT = 10_000  # the read the long one is compared with
MEMORIES = {
    "slots (16)": {"memory": "slots", "num_slots": 16},
    "kv (budget 512)": {"memory": "kv", "kv_budget": 512},
}


def peak_memory(model: MemGPT, doc: torch.Tensor) -> tuple[float, float]:
    """Seconds and peak GPU MiB of reading one document (peak 0 without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    model.read([doc])
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return seconds, peak


def throughput(backbone: dict, args: argparse.Namespace) -> tuple[list[dict], str]:
    """Part 1: the bare backbone and both memories, side by side, on the same batch."""
    models = {
        name: MemGPT(MemGPTConfig(backbone, chunk_size=args.chunk, **options)).eval()
        for name, options in MEMORIES.items()
    }
    first = next(iter(models.values()))
    params = sum(p.numel() for p in first.backbone.parameters())
    label = (
        f"qwen2-0.5b shape, {backbone['num_hidden_layers']} layers, {params / 1e6:.0f}M parameters, "
        f"{first.dtype}, {first.device}"
    )
    docs = torch.randint(2, 4096, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    on_device = docs.to(first.device)
    fns = {"bare backbone": lambda: bare_forward(first, on_device, args.chunk)}
    fns |= {name: (lambda m=m: m.read(list(docs))) for name, m in models.items()}
    with torch.inference_mode():
        seconds = interleaved(fns, repeat=3)
    n = args.batch * args.tokens
    rows = [
        {"reader": name, "tok/s": n / s, "vs bare": seconds["bare backbone"] / s}
        for name, s in seconds.items()
    ]
    return rows, label


def long_read(backbone: dict, args: argparse.Namespace) -> list[dict]:
    """Part 2: one model at a time (so the peak is that model's alone), a 10k-token read and a long one."""
    long_doc = torch.randint(2, 4096, (args.long,), generator=torch.Generator().manual_seed(1))
    rows = []
    for name, options in MEMORIES.items():
        model = MemGPT(MemGPTConfig(backbone, chunk_size=args.chunk, **options)).eval()
        with torch.inference_mode():
            model.read([long_doc[: 4 * args.chunk]])  # warm up
            short_s, short_peak = peak_memory(model, long_doc[:SHORT])
            long_s, long_peak = peak_memory(model, long_doc)
        rows.append(
            {
                "memory": name,
                "10k tok/s": SHORT / short_s,
                f"{args.long} tok/s": args.long / long_s,
                "s/token vs 10k": (long_s / args.long) / (short_s / SHORT),
                "peak MiB 10k": short_peak or "n/a (no CUDA)",
                f"peak MiB {args.long}": long_peak or "n/a (no CUDA)",
                "peak vs 10k": long_peak / short_peak if short_peak else "n/a",
            }
        )
        del model
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--layers", type=int, default=None, help="keep the first N layers (default: all 24)")
    p.add_argument("--batch", type=int, default=8, help="documents read in lockstep (default 8)")
    p.add_argument("--tokens", type=int, default=16_384, help="tokens per document in part 1 (default 16384)")
    p.add_argument("--long", type=int, default=1_000_000, help="the long document of part 2 (default 1M)")
    p.add_argument("--chunk", type=int, default=512)
    p.set_defaults(backbone="qwen2-0.5b")
    args = p.parse_args()
    if args.long < SHORT:
        p.error(f"--long must be at least {SHORT} tokens: part 2 compares it with a {SHORT}-token read")
    backbone = backbone_config(args)
    rows, label = throughput(backbone, args)
    print_table(
        rows,
        f"1. read throughput, {args.batch} documents x {args.tokens} tokens in lockstep, chunk {args.chunk}, "
        f"{label} (goal: >= 0.9 of bare)",
    )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print_table(
        long_read(backbone, args),
        f"2. one long document, chunk {args.chunk}, {label} (goal: peak <= 1.1x the 10k read)",
    )
    print(f"machine: {machine()}\ncommand: {command()}")


if __name__ == "__main__":
    main()
