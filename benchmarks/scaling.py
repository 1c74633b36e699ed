"""Linear time, flat memory: reading 10k, 100k (and 1M) token documents with slot and kv memory.

Each read runs in a fresh process so its peak RSS is its own. Beside it, the bare backbone reading the same
text with a growing KV cache (what `generate` over a long prompt does) until it runs out of time or memory.

    python -m benchmarks.scaling          # 10k and 100k tokens, ~2 minutes on 2 CPU cores
    python -m benchmarks.scaling --full   # adds 1M tokens
"""

import argparse
import json
import subprocess
import sys
import time

import torch
from transformers import DynamicCache

from memgpt import MemGPT, MemGPTConfig
from memgpt.config import default_backbone

from .common import command, machine, parser, peak_rss_mib, print_table, sync

MEMORIES = {"slots": {"memory": "slots"}, "kv": {"memory": "kv", "kv_budget": 512}}


def read_once(memory: str, n_tokens: int) -> dict:
    """Runs inside the child process."""
    torch.manual_seed(0)
    model = MemGPT(MemGPTConfig(chunk_size=512, **MEMORIES[memory])).eval()
    doc = torch.randint(2, 4096, (n_tokens,))
    with torch.inference_mode():
        model.read([doc[:2048]])  # warm up kernels before measuring
        base = peak_rss_mib()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        state = model.read([doc])
        seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": base,
        "gpu_mib": gpu,
        "state_bytes": state.nbytes(),
    }


def growing_cache(limit_tokens: int, budget_s: float) -> list[dict]:
    """The backbone alone, its KV cache growing chunk by chunk (a long-context model: RoPE positions up to
    `limit_tokens`), until `limit_tokens`, the time budget, or memory runs out. A row at every doubling."""
    backbone = default_backbone() | {"max_position_embeddings": limit_tokens}
    model = MemGPT(MemGPTConfig(backbone=backbone)).eval()
    chunk, n, rows, report_at = 512, 0, [], 8192
    cache, elapsed = DynamicCache(), 0.0
    doc = torch.randint(2, 4096, (limit_tokens,))
    note = "read it all"
    with torch.inference_mode():
        while n < limit_tokens:
            start = time.perf_counter()
            try:
                model.backbone.base_model(input_ids=doc[n : n + chunk][None], cache=cache, use_cache=True)
            except torch.OutOfMemoryError:
                note = f"out of memory at {n} tokens"
                break
            sync()
            seconds = time.perf_counter() - start
            n, elapsed = n + chunk, elapsed + seconds
            if n >= report_at or n >= limit_tokens or elapsed > budget_s:
                size = sum(x.keys.numel() + x.values.numel() for x in cache.layers) * 4 / 2**20
                rows.append(
                    {
                        "tokens": n,
                        "us/token (this chunk)": 1e6 * seconds / chunk,
                        "us/token (so far)": 1e6 * elapsed / n,
                        "cache MiB": size,
                        "note": "",
                    }
                )
                report_at *= 2
            if elapsed > budget_s:
                note = f"stopped: {budget_s:.0f} s budget spent"
                break
    rows[-1]["note"] = note
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--full", action="store_true")
    p.add_argument("--one", nargs=2, metavar=("MEMORY", "TOKENS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(read_once(args.one[0], int(args.one[1]))))
        return
    sizes = [10_000, 100_000] + ([1_000_000] if args.full else [])
    rows = []
    for memory in MEMORIES:
        first = None
        for n in sizes:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.scaling", "--one", memory, str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            first = first or r
            rows.append(
                {
                    "memory": memory,
                    "tokens": n,
                    "tok/s": n / r["seconds"],
                    "s/token vs 10k": (r["seconds"] / n) / (first["seconds"] / sizes[0]),
                    "peak RSS MiB": r["peak_rss_mib"],
                    "peak vs 10k": r["peak_rss_mib"] / first["peak_rss_mib"],
                    "state KiB": r["state_bytes"] / 1024,
                }
            )
    print_table(
        rows, "reading one document, chunk 512, default backbone (goal: s/token within ±15%, peak <= 1.1x)"
    )
    budget = 600.0 if args.full else 60.0
    print_table(
        growing_cache(sizes[-1], budget),
        "bare backbone with a growing KV cache over the same length (what generate over a long prompt does; "
        "default backbone with RoPE positions extended to the document)",
    )
    print(f"machine: {machine()}\ncommand: {command()}")


if __name__ == "__main__":
    main()
