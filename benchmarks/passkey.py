"""Passkey retrieval: a number hidden at some depth of filler text, asked for at the end.

python -m benchmarks.passkey            # 1k-16k tokens, 3 depths: minutes on 2 CPU cores
python -m benchmarks.passkey --full     # 1k-128k tokens (16x SmolLM2's window), 5 depths
"""

import json
import random
import time
from pathlib import Path

import torch

from memgpt.names import TEXT_MODEL_SETTINGS

from .common import command, load_methods, machine, parser, record

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is"


def passkey_ids(tokenizer, n_tokens: int, depth: float, key: str) -> torch.Tensor:
    """About `n_tokens` tokens: filler with the needle at `depth` (0: start, 1: just before the question)."""
    filler = tokenizer.encode(FILLER, add_special_tokens=False)
    needle = tokenizer.encode(NEEDLE.format(key=key), add_special_tokens=False)
    question = tokenizer.encode(QUESTION, add_special_tokens=False)
    room = max(0, n_tokens - len(needle) - len(question))
    repeats = room // len(filler)
    before = round(depth * repeats)
    ids = filler * before + needle + filler * (repeats - before) + question
    return torch.tensor(ids)


def random_key(rng: random.Random) -> str:
    return str(rng.randrange(10_000, 100_000))


METHODS = ("full", "truncated", "kv", "retrieval")


def answer(model, ids: torch.Tensor, method: str, window: int) -> torch.Tensor:
    """Seven new tokens after the question, by one method."""
    if method in ("full", "truncated"):  # the backbone alone: everything if it fits, else the last window
        if method == "full" and len(ids) > window:
            return None
        context = ids[-(window - 8) :][None]
        return model.backbone.generate(context, max_new_tokens=7, do_sample=False)[0, context.shape[1] :]
    return model.generate(ids[None], max_new_tokens=7)[0, len(ids) :]


def main(argv: list[str] | None = None) -> None:

    p = parser(__doc__)
    p.add_argument(
        "--model", default=None, help="an HF model folder, GGUF file or hub id (default: SmolLM2 offline)"
    )
    p.add_argument("--full", action="store_true", help="1k-128k tokens, 5 depths")
    p.add_argument("--lengths", type=int, nargs="+", default=None)
    p.add_argument("--depths", type=float, nargs="+", default=None)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--chunk", type=int, default=TEXT_MODEL_SETTINGS["chunk_size"])
    p.add_argument("--budget", type=int, default=TEXT_MODEL_SETTINGS["kv_budget"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks", help="folder for passkey.json / .md / .png")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="rows of earlier runs' passkey.json to show beside this run's (alone: only merge them)")  # fmt: skip
    args = p.parse_args(argv)
    earlier = [r for path in args.merge for r in json.loads(Path(path).read_text())["rows"]]
    if args.merge and not (args.full or args.lengths or args.depths):
        return write(latest(earlier), args.out, time.time())
    lengths = args.lengths or ([2**i * 1024 for i in range(8)] if args.full else [1024, 4096, 16384])
    depths = args.depths or ([0.0, 0.25, 0.5, 0.75, 1.0] if args.full else [0.1, 0.5, 0.9])
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    options = {"chunk_size": args.chunk, "kv_budget": args.budget, "kv_recent": 256}
    models = load_methods(args.model, list(METHODS), **options)
    base = models["full"]
    window = int(base.backbone.config.max_position_embeddings)
    print(f"{machine()}\nmodel {args.model}: window {window:,}; lengths {lengths}; depths {depths}")
    rng = random.Random(args.seed)
    rows, t0 = [], time.time()
    for n in lengths:
        for depth in depths:
            key = random_key(rng)
            ids = passkey_ids(base.tokenizer, n, depth, key)
            for method in args.methods:
                start = time.time()
                new = answer(models[method], ids, method, window)
                if new is None:
                    continue
                text = base.tokenizer.decode(new)
                rows.append({"method": method, "tokens": len(ids), "depth": depth, "key": key, "answer": text,
                             "found": key in text, "seconds": round(time.time() - start, 1)})  # fmt: skip
                print(f"{method:9s} {len(ids):7,} tokens depth {depth:.2f}: {key in text!s:5s} {text!r}")
    write(latest(earlier + rows), args.out, t0)


def latest(rows: list[dict]) -> list[dict]:
    """One row per method, length and depth: the last given (a later run replaces an earlier one)."""
    return list({(r["method"], r["tokens"], r["depth"]): r for r in rows}.values())


def write(rows: list[dict], folder: str, t0: float) -> None:
    """passkey.md (the table), passkey.json (every case) and passkey.png (the heatmap) in `folder`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    md = table(rows, methods)
    (out / "passkey.md").write_text(md + "\n")
    (out / "passkey.json").write_text(json.dumps(record(rows=rows), indent=1))
    heatmap(rows, methods, out / "passkey.png")
    print(
        f"\n{md}\n\ncommand: {command()}\nwrote {out}/passkey.md, passkey.json, passkey.png in {time.time() - t0:.0f}s"
    )


def table(rows: list[dict], methods: list[str]) -> str:
    """Share of depths found, per method and length."""
    by_length = sorted({r["tokens"] for r in rows})
    head = "| method | " + " | ".join(f"{n:,} tokens" for n in by_length) + " |"
    lines = [head, "|---|" + "---|" * len(by_length)]
    for m in methods:
        cells = []
        for n in by_length:
            found = [r["found"] for r in rows if r["method"] == m and r["tokens"] == n]
            missing = "past the window" if m == "full" else "not run"
            cells.append(f"{sum(found)}/{len(found)}" if found else missing)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heatmap(rows: list[dict], methods: list[str], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["tokens"] for r in rows})
    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.4), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        grid = torch.full((len(depths), len(lengths)), float("nan"))
        for r in rows:
            if r["method"] == m:
                grid[depths.index(r["depth"]), lengths.index(r["tokens"])] = float(r["found"])
        ax.imshow(grid.numpy(), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)), [f"{round(n / 1024)}k" for n in lengths], rotation=45)
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        ax.set_title(m)
        ax.set_xlabel("tokens")
    axes[0][0].set_ylabel("depth of the key")
    fig.suptitle("passkey found (green) on SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
