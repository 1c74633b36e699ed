"""Long-document benchmark: state accuracy and fact P/R/F1 against document length, memory vs baselines.

Planted documents (memgpt.training.planted) from the trained length up to 32x it, plus one document of >= 100k tokens,
each read by four methods built on the same trained weights:
- slots:      MemGPT with its slot memory (reads every chunk; the summary is written from memory alone);
- kv:         the same backbone with kv memory at a fixed budget (sinks + most attended + recent window);
- no-memory:  the backbone with only the last chunk in its context;
- truncated:  the backbone with the document's last `window` tokens in its context (the longest context it
              was trained on).
Facts of chunk t are written with chunk t in the context (plus the memory of chunks < t, or the tokens before
it that fit the window); the summary after the last chunk.

    python -m benchmarks.longdoc                    # small: a few minutes on 2 CPU cores
    python -m benchmarks.longdoc --full             # more documents, facts scored on every chunk
"""

import argparse
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from memgpt import MemGPT, MemoryState
from memgpt.training import TRAIN_CONFIG, scoring
from memgpt.training import planted as pk
from memgpt.training.batches import TaskPrompts

from .common import parser

DEFAULT_MODEL = Path(__file__).parents[1] / "memgpt" / "pretrained" / "memgpt-small"
METHODS = ("slots", "kv", "no-memory", "truncated")
LONG_DOC_TOKENS = 100_000


@dataclass
class Result:
    method: str
    n_chunks: int
    n_tokens: int
    n_docs: int
    state_accuracy: float
    facts: scoring.FactScore = field(default_factory=scoring.FactScore)
    seconds: float = 0.0

    def row(self) -> dict:
        f = self.facts
        return {"method": self.method, "n_chunks": self.n_chunks, "n_tokens": self.n_tokens, "n_docs": self.n_docs,
                "state_accuracy": round(self.state_accuracy, 4), "fact_precision": round(f.precision, 4),
                "fact_recall": round(f.recall, 4), "fact_f1": round(f.f1, 4), "seconds": round(self.seconds, 1)}  # fmt: skip


class Bench:
    """The four readers over one trained model folder."""

    def __init__(
        self, model_dir: Path, kv_budget: int, kv_recent: int, window: int | None, fact_new_tokens: int
    ):
        self.slots = MemGPT.from_pretrained(model_dir, device="cpu", dtype=torch.float32).eval()
        self.kv = MemGPT.from_pretrained(
            model_dir, device="cpu", dtype=torch.float32, memory="kv", kv_budget=kv_budget,
            kv_recent=kv_recent, kv_sinks=4,
        ).eval()  # fmt: skip
        self.train_cfg = json.loads((model_dir / TRAIN_CONFIG).read_text())
        self.prompts = TaskPrompts(self.slots.tokenizer)
        docs_cfg = self.train_cfg.get("docs", {})
        self.doc_config = pk.PlantedConfig(**docs_cfg)
        self.trained_chunks = max(int(v) for v in self.train_cfg["curriculum"].values())
        self.window = window or self.trained_chunks * self.doc_config.chunk_size
        self.summary_new_tokens = 12 * self.doc_config.n_entities + 8
        self.fact_new_tokens = fact_new_tokens

    # ---- memory readers: facts at chunk t from (chunk t, M_{t-1}); the summary from M_N ----------------------

    @torch.no_grad()
    def run_memory(
        self, model: MemGPT, docs: list[pk.Document], scored: list[set[int]]
    ) -> tuple[list[str], scoring.FactScore]:
        chunks = torch.tensor([d.chunks for d in docs], dtype=torch.long)  # (B, N, C)
        state = model.init_state(len(docs))
        score = scoring.FactScore()
        for t in range(chunks.shape[1]):
            idx = [i for i, s in enumerate(scored) if t in s]
            if idx:
                prompt = torch.cat([chunks[idx, t], self._ids(self.prompts.facts, len(idx))], dim=1)
                texts = self._generate(model, prompt, state.select(idx), self.fact_new_tokens)
                for i, text in zip(idx, texts, strict=True):
                    score = score + scoring.score_facts(text, docs[i].chunk_facts(t))
            state = model.step(state, chunks[:, t])
        prompt = self._ids(self.prompts.summary, len(docs))
        return self._generate(model, prompt, state, self.summary_new_tokens), score

    # ---- context readers: the backbone alone over the last `window` tokens ------------------------------------

    @torch.no_grad()
    def run_context(
        self, window: int, docs: list[pk.Document], scored: list[set[int]]
    ) -> tuple[list[str], scoring.FactScore]:
        tokens = torch.tensor([d.token_ids() for d in docs], dtype=torch.long)  # (B, N*C)
        C = self.doc_config.chunk_size
        score = scoring.FactScore()
        for t in sorted(set().union(*scored)):
            idx = [i for i, s in enumerate(scored) if t in s]
            end = (t + 1) * C
            prompt = torch.cat(
                [tokens[idx, max(0, end - window) : end], self._ids(self.prompts.facts, len(idx))], 1
            )
            for i, text in zip(idx, self._backbone_generate(prompt, self.fact_new_tokens), strict=True):
                score = score + scoring.score_facts(text, docs[i].chunk_facts(t))
        prompt = torch.cat([tokens[:, -window:], self._ids(self.prompts.context_summary, len(docs))], dim=1)
        return self._backbone_generate(prompt, self.summary_new_tokens), score

    # ---- helpers -------------------------------------------------------------------------------------------------

    def _ids(self, ids: list[int], batch: int) -> torch.Tensor:
        return torch.tensor([ids] * batch, dtype=torch.long)

    def _generate(self, model: MemGPT, prompt: torch.Tensor, state: MemoryState, new: int) -> list[str]:
        replies = model.reply(prompt, memory=state, max_new_tokens=new, eos_token_id=self.prompts.eos)
        return [r.text for r in replies]

    def _backbone_generate(self, prompt: torch.Tensor, new: int) -> list[str]:
        out = self.slots.backbone.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False,
            eos_token_id=self.prompts.eos, pad_token_id=self.prompts.pad,
        )  # fmt: skip
        return [self.prompts.decode(row[prompt.shape[1] :].tolist()) for row in out]

    def evaluate(self, method: str, docs: list[pk.Document], scored: list[set[int]]) -> Result:
        t0 = time.time()
        if method == "slots":
            summaries, facts = self.run_memory(self.slots, docs, scored)
        elif method == "kv":
            summaries, facts = self.run_memory(self.kv, docs, scored)
        elif method == "no-memory":
            summaries, facts = self.run_context(self.doc_config.chunk_size, docs, scored)
        elif method == "truncated":
            summaries, facts = self.run_context(self.window, docs, scored)
        else:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        acc = sum(scoring.state_accuracy(s, d.state) for s, d in zip(summaries, docs, strict=True)) / len(
            docs
        )
        n = len(docs[0].chunks)
        return Result(method, n, n * self.doc_config.chunk_size, len(docs), acc, facts, time.time() - t0)


def scored_chunks(doc: pk.Document, limit: int | None, seed: int) -> set[int]:
    """Chunks whose facts are scored: all, or every chunk stating a fact plus fact-free ones up to `limit`."""
    n = len(doc.chunks)
    if limit is None or n <= limit:
        return set(range(n))
    with_facts = {f.chunk for f in doc.facts}
    others = [c for c in range(n) if c not in with_facts]
    extra = max(0, limit - len(with_facts))
    return with_facts | set(random.Random(seed).sample(others, min(extra, len(others))))


def run(args: argparse.Namespace) -> list[Result]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench = Bench(Path(args.model), args.kv_budget, args.kv_recent, args.window, args.fact_tokens)
    L, C = bench.trained_chunks, bench.doc_config.chunk_size
    lengths = [L * m for m in args.multiples] + ([-(-LONG_DOC_TOKENS // C)] if args.long_docs else [])
    results = []
    for n in lengths:
        n_docs = args.docs if n <= 8 * L else max(1, args.docs // 2) if n <= 32 * L else args.long_docs
        cfg = pk.PlantedConfig(**{**bench.train_cfg.get("docs", {}), "n_chunks": n})
        docs = [pk.generate(cfg, args.seed + 1000 * n + i, bench.prompts.tokenizer) for i in range(n_docs)]
        scored = [scored_chunks(d, args.fact_chunks, args.seed + i) for i, d in enumerate(docs)]
        for method in args.methods:
            r = bench.evaluate(method, docs, scored)
            results.append(r)
            row = r.row()
            print(f"{row['n_chunks']:>6} chunks {row['n_tokens']:>7} tok  {method:<10} state {row['state_accuracy']:.3f}  "
                  f"facts P {row['fact_precision']:.3f} R {row['fact_recall']:.3f} F1 {row['fact_f1']:.3f}  "
                  f"({row['seconds']:.0f}s)", flush=True)  # fmt: skip
    return results


def table(results: list[Result], methods: list[str]) -> str:
    """A markdown table: one row per length, state accuracy and fact F1 (P/R) per method."""
    head = "| chunks | tokens | " + " | ".join(f"{m} state | {m} facts F1 (P/R)" for m in methods) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(methods))]
    by = {(r.n_chunks, r.method): r for r in results}
    for n in sorted({r.n_chunks for r in results}):
        cells = []
        for m in methods:
            r = by[(n, m)]
            f = r.facts
            cells += [f"{r.state_accuracy:.3f}", f"{f.f1:.3f} ({f.precision:.2f}/{f.recall:.2f})"]
        tokens = by[(n, methods[0])].n_tokens
        docs = by[(n, methods[0])].n_docs
        lines.append(f"| {n} | {tokens:,} ({docs} docs) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[Result], methods: list[str], path: Path, trained: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in methods:
        rs = sorted((r for r in results if r.method == m), key=lambda r: r.n_chunks)
        x = [r.n_chunks for r in rs]
        axes[0].plot(x, [r.state_accuracy for r in rs], marker="o", label=m)
        axes[1].plot(x, [r.facts.f1 for r in rs], marker="o", label=m)
    for ax, title in zip(axes, ("state accuracy (summary)", "fact F1 (per chunk)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.axvline(trained, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("chunks per document (dotted: trained length)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="a MemGPT folder saved by jobs.train")
    p.add_argument("--full", action="store_true", help="128 docs per length, facts scored on every chunk")
    p.add_argument("--docs", type=int, default=None, help="documents per length up to 8x (half beyond)")
    p.add_argument("--long-docs", type=int, default=1, help="documents of >= 100k tokens (0: none)")
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--fact-chunks", type=int, default=None, help="chunks scored for facts per document")
    p.add_argument("--fact-tokens", type=int, default=64, help="max new tokens for one chunk's facts")
    p.add_argument("--kv-budget", type=int, default=128, help="kv entries kept per layer")
    p.add_argument("--kv-recent", type=int, default=64)
    p.add_argument("--window", type=int, default=None, help="truncated context in tokens (default: trained)")
    p.add_argument("--seed", type=int, default=20_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/benchmarks", help="folder for longdoc.json / .md / .png")
    args = p.parse_args(argv)
    if args.docs is None:
        args.docs = 128 if args.full else 32
    if args.fact_chunks is None and not args.full:
        args.fact_chunks = 12

    t0 = time.time()
    results = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = table(results, args.methods)
    (out / "longdoc.md").write_text(md + "\n")
    (out / "longdoc.json").write_text(json.dumps([r.row() for r in results], indent=1) + "\n")
    trained = min(r.n_chunks for r in results)
    plot(results, args.methods, out / "longdoc.png", trained)
    print("\n" + md)
    print(f"\nwrote {out}/longdoc.md, longdoc.json, longdoc.png in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
