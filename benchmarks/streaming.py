"""Per-token loss against tokens read, far past the backbone's window: does kv memory stay flat?

A real pretrained backbone (SmolLM2-135M-Instruct, 8,192-position window, made ready offline by
`python -m memgpt.offline`) reads held-out book text chunk by chunk. Side by side in one run:
- full:           kv_budget=None, exact attention over everything read (inside the window only);
- kv-512/1024/2048: kv memory at that budget (4 sinks, 256 recent, the rest by attention received),
                  positions within the cache, moved keys re-rotated;
- kv-1024-decay:  the same budget, the attention an entry received halved at every chunk;
- kv-1024-absolute: the same budget with document positions (past the window: positions never trained on);
- window-1024:    a sliding window of the last 1024 entries, no sinks (StreamingLLM's failing baseline);
- no-memory:      each chunk alone (the bare backbone's chunked forward).
Then the read's tokens/s against the bare backbone's chunked forward, timed in turns on the same chunks.

    python -m benchmarks.streaming                 # 16k tokens (2x the window), kv-1024 and the baselines
    python -m benchmarks.streaming --full          # 128k tokens (16x the window), every method
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache

from memgpt import MemGPT

from .common import bare_forward, command, interleaved, machine, parser, print_table

CORPUS = Path(__file__).parents[2] / "shared" / "corpus" / "pride_and_prejudice.txt"
BIN = 2048  # tokens per loss figure
METHODS = {  # name -> kv options (None: no memory at all)
    "full": {"kv_budget": None},
    "kv-512": {"kv_budget": 512, "kv_sinks": 4, "kv_recent": 256},
    "kv-1024": {"kv_budget": 1024, "kv_sinks": 4, "kv_recent": 256},
    "kv-2048": {"kv_budget": 2048, "kv_sinks": 4, "kv_recent": 256},
    "kv-1024-decay": {"kv_budget": 1024, "kv_sinks": 4, "kv_recent": 256, "kv_decay": 0.5},
    "kv-1024-absolute": {"kv_budget": 1024, "kv_sinks": 4, "kv_recent": 256, "kv_positions": "absolute"},
    "window-1024": {"kv_budget": 1024, "kv_sinks": 0, "kv_recent": 1024},
    "no-memory": None,
}
SMALL = ["full", "kv-1024", "window-1024", "no-memory"]


@dataclass
class Curve:
    method: str
    losses: list[float]  # mean per-token loss of each BIN tokens read
    seconds: float


def read_text(path: Path, start: int) -> str:
    if not path.is_file():
        raise SystemExit(f"error: no book text at {path} (pass --text FILE)")
    return path.read_text(encoding="utf-8")[start:]


def loss_curve(model: MemGPT | None, backbone, ids: torch.Tensor, chunk: int, limit: int) -> list[float]:
    """Mean next-token loss per BIN tokens, reading `ids` chunk by chunk up to `limit` tokens."""
    sums, counts = [0.0] * math.ceil(limit / BIN), [0] * math.ceil(limit / BIN)
    state = model.init_state(1) if model is not None else None
    for start in range(0, limit, chunk):
        piece = ids[None, start : min(start + chunk, limit)]
        if model is None:
            loss = backbone(piece, labels=piece).loss
        else:
            out = model(piece, memory=state, labels=piece)
            loss, state = out.loss, out.memory
        n = piece.shape[1] - 1  # tokens predicted within the chunk
        sums[start // BIN] += float(loss) * n
        counts[start // BIN] += n
    return [s / c for s, c in zip(sums, counts, strict=True)]


def throughput(backbone, tokenizer, ids: torch.Tensor, chunk: int, budget: int) -> dict[str, float]:
    """Seconds per chunk: kv memory reading a chunk into a full state; the bare backbone on the chunk alone;
    and the bare backbone on the chunk behind `budget` cached entries (what attending to any memory costs)."""
    model = MemGPT.from_backbone(
        backbone, tokenizer=tokenizer, chunk_size=chunk, kv_budget=budget, kv_recent=256
    )
    state = model.read([ids[: budget + 2 * chunk]])  # a state at its budget, as after any long read
    piece = ids[None, budget + 2 * chunk : budget + 3 * chunk]
    keys, values = state.tensors["keys"], state.tensors["values"]

    def cached() -> None:
        cache = DynamicCache()
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            cache.update(k, v, layer)
        position = torch.arange(budget, budget + piece.shape[1])[None]
        backbone.base_model(input_ids=piece, cache=cache, position_ids=position, use_cache=True)

    return interleaved(
        {
            "kv": lambda: model.step(state, piece),
            "bare": lambda: bare_forward(model, piece[0], chunk),
            "cached": cached,
        },
        repeat=5,
    )


def summarise(curves: list[Curve], window: int) -> list[str]:
    """The goals, each as measured."""
    by = {c.method: c.losses for c in curves}

    def mean(losses: list[float], lo: int, hi: int) -> float:
        part = losses[lo // BIN : hi // BIN]
        return sum(part) / len(part)

    lines = []
    if "full" in by and "kv-1024" in by:
        n = min(window, BIN * len(by["full"]))
        full, kv = mean(by["full"], 0, n), mean(by["kv-1024"], 0, n)
        lines.append(
            f"inside the window (0-{n // 1000}k): kv-1024 {kv:.3f} vs full {full:.3f}: {kv / full - 1:+.1%}"
        )
    total = BIN * max(len(c.losses) for c in curves)
    late = (total // 2, total) if total >= 4 * window else (window, total)
    for c in curves if total > window else []:
        if c.method.startswith(("kv", "window")) and BIN * len(c.losses) == total:
            early, far = mean(c.losses, BIN, window), mean(c.losses, *late)
            line = (
                f"{c.method}: {late[0] // 1024}-{late[1] // 1024}k {far:.3f} vs its own 2-{window // 1024}k "
                f"{early:.3f}: {far / early - 1:+.1%}"
            )
            if (
                "no-memory" in by
            ):  # the text's own difficulty moves every curve: the gain over no memory does not
                base_early, base_far = mean(by["no-memory"], BIN, window), mean(by["no-memory"], *late)
                line += f"; below no-memory by {base_early - early:.3f} then {base_far - far:.3f} nats"
            lines.append(line)
    return lines


def table(curves: list[Curve], columns: int = 16) -> str:
    """Mean loss per span of tokens read, at most `columns` spans (each a whole number of BIN)."""
    n = max(len(c.losses) for c in curves)
    group = -(-n // columns)
    spans = [(i, min(i + group, n)) for i in range(0, n, group)]
    label = [f"{a * BIN // 1024}-{b * BIN // 1024}k" for a, b in spans]
    lines = ["| method | " + " | ".join(label) + " |", "|---|" + "---|" * len(spans)]
    for c in curves:
        cells = [
            f"{sum(c.losses[a:b]) / (b - a):.2f}" if b <= len(c.losses) else "past the window"
            for a, b in spans
        ]
        lines.append(f"| {c.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves: list[Curve], window: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for c in curves:
        ax.plot([(i + 1) * BIN for i in range(len(c.losses))], c.losses, marker=".", label=c.method)
    ax.axvline(window, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens read (dotted: the backbone's window)")
    ax.set_ylabel(f"loss per token, nats (mean of {BIN} tokens)")
    ax.set_title("SmolLM2-135M-Instruct reading a book far past its window")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_methods(methods: list[str], backbone, tokenizer, ids: torch.Tensor, chunk: int, tokens: int, window: int,
                out: Path) -> list[Curve]:  # fmt: skip
    """Each method's loss curve over the book, saved as it goes: a long run stopped early loses nothing."""
    curves = []
    for name in methods:
        options = METHODS[name]
        limit = min(tokens, window) if name == "full" else tokens
        start = time.time()
        model = None if options is None else MemGPT.from_backbone(backbone, tokenizer=tokenizer, chunk_size=chunk,
                                                                   **options)  # fmt: skip
        curves.append(Curve(name, loss_curve(model, backbone, ids, chunk, limit), time.time() - start))
        partial = {c.method: c.losses for c in curves}
        (out / "streaming.partial.json").write_text(
            json.dumps({"command": command(), "curves": partial}) + "\n"
        )
        print(
            f"{name}: {limit:,} tokens in {curves[-1].seconds:.0f}s, "
            + " ".join(f"{x:.2f}" for x in curves[-1].losses)
        )
    return curves


def full_attention_at(offsets: list[int], backbone, tokenizer, ids: torch.Tensor, chunk: int, window: int,
                      curves: list[Curve]) -> list[str]:  # fmt: skip
    """Full attention's loss on the BIN tokens at each offset, the window before it read exactly (a reference
    for kv memory past the window), beside each method's there."""
    full = MemGPT.from_backbone(backbone, tokenizer=tokenizer, chunk_size=chunk, kv_budget=None)
    goals = []
    for at in offsets:
        start = max(0, at - window + BIN)
        losses = loss_curve(full, backbone, ids[start:], chunk, at + BIN - start)
        goals.append(f"full attention at {at // 1024}-{(at + BIN) // 1024}k, the {(at - start) // 1024}k before "
                     f"it as context: {losses[-1]:.3f}" + "".join(
                         f"; {c.method} there {c.losses[at // BIN]:.3f}" for c in curves if len(c.losses) > at // BIN))  # fmt: skip
    return goals


def write(
    out: Path, curves: list[Curve], goals: list[str], speed: dict, model: str, tokens: int, window: int
) -> str:
    """streaming.md, .json and .png, and the table printed; returns the markdown table."""
    md = table(curves)
    (out / "streaming.md").write_text(md + "\n\n" + "\n".join(f"- {g}" for g in goals) + "\n")
    record = {"command": command(), "machine": machine(), "model": model, "tokens": tokens, "bin": BIN,
              "curves": {c.method: c.losses for c in curves}, "seconds": {c.method: c.seconds for c in curves},
              "seconds_per_chunk": speed, "goals": goals}  # fmt: skip
    (out / "streaming.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(curves, window, out / "streaming.png")
    print_table(
        [{"method": c.method, "seconds": c.seconds, "last loss": c.losses[-1]} for c in curves], "methods"
    )
    print("\n" + md + "\n\n" + "\n".join(goals))
    return md


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--model", default=None, help="an HF model folder, GGUF file or hub id (default: SmolLM2 offline)"
    )
    p.add_argument("--full", action="store_true", help="128k tokens and every method")
    p.add_argument("--tokens", type=int, default=None, help="tokens read (default 16k, --full 128k)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    p.add_argument("--chunk", type=int, default=512)
    p.add_argument(
        "--text", type=Path, default=CORPUS, help="book text (default: Pride and Prejudice from ../shared)"
    )
    p.add_argument("--start", type=int, default=5_000, help="first character read (skips the front matter)")
    p.add_argument(
        "--full-at", type=int, nargs="*", default=[],
        help="also: full attention's loss on the BIN tokens at each of these token offsets, with the window's "
        "worth of tokens before them as context (a reference for kv memory past the window)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks", help="folder for streaming.json / .md / .png")
    args = p.parse_args(argv)
    tokens = args.tokens or (131_072 if args.full else 16_384)
    methods = args.methods or (list(METHODS) if args.full else SMALL)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    t0 = time.time()

    if args.model is None:
        from memgpt.offline import ensure_smollm2

        args.model = str(ensure_smollm2())
    base = MemGPT.from_pretrained(args.model, memory="kv", kv_budget=None, device="cpu", dtype=torch.float32)
    backbone, tokenizer = base.backbone, base.tokenizer
    window = int(backbone.config.max_position_embeddings)
    ids = torch.tensor(tokenizer.encode(read_text(args.text, args.start)))
    if len(ids) < tokens:
        raise SystemExit(
            f"error: {args.text} holds {len(ids):,} tokens from character {args.start}, fewer than {tokens:,}"
        )
    print(
        f"{machine()}\nmodel {args.model}: window {window:,} positions; {tokens:,} tokens of {args.text.name}"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = run_methods(methods, backbone, tokenizer, ids, args.chunk, tokens, window, out)
    goals = full_attention_at(args.full_at, backbone, tokenizer, ids, args.chunk, window, curves)
    speed = throughput(backbone, tokenizer, ids, args.chunk, budget=1024)
    goals += summarise(curves, window)
    goals.append(
        f"read throughput, kv-1024 vs the bare backbone's chunked forward: {speed['bare'] / speed['kv']:.2f} "
        f"({args.chunk / speed['kv']:,.0f} vs {args.chunk / speed['bare']:,.0f} tokens/s); the bare backbone "
        f"attending to 1024 cached entries: {speed['bare'] / speed['cached']:.2f} (the floor any 1024-entry memory "
        f"pays), so kv memory's own work costs {speed['kv'] / speed['cached'] - 1:+.1%}"
    )
    write(out, curves, goals, speed, args.model, tokens, window)
    print(
        f"\ncommand: {command()}\nwrote {out}/streaming.md, streaming.json, streaming.png in {time.time() - t0:.0f}s"
    )


if __name__ == "__main__":
    main()
