"""Trainable memory on a real backbone, judged on held-out book text: the learning curve of a `jobs.train` run
(task books) and its final model beside the same backbone's memories that need no training.

    python -m benchmarks.books_recall runs/memgpt-books                 # the curve, then the table (~10 min)
    python -m benchmarks.books_recall runs/memgpt-books --curve-only    # the curve from history.jsonl alone

Held-out documents (memgpt/training/books.py): real book text the run never trained on, a fact stated once in
it, asked after the last segment in other words. Two scores per document:
- exact: greedy decoding writes the answer word (what the run's own evaluation prints every eval_every steps);
- choice: of 10 candidate answers of the fact's kind (the ten places; or the number and nine others with as many
  digits), the answer is the most likely after the question. Chance is 1 in 10. A frozen base never learned to
  answer in one word, so only `choice` compares it fairly with the trained model.
A third score, `exact, fact earlier`: exact on the documents whose fact is stated before the last segment, the
ones only a memory can answer (the last segment alone can only guess).
Rows: the trained memory (by its name: `slots`, `gist`), `last segment` (the same model with its memory not written: what it answers
from the last segment alone), `kv (full text)` (the run's backbone, untrained, with a kv memory that drops
nothing: every segment in its context, what a memory could at best hand on; the retrieval memory keeps all of
these few hundred tokens too, so it is the same row).
The final table draws its documents with a seed of its own (`--seed`): not the ones the run's evaluations
printed during training, so a run chosen or stopped by its curve is still judged on documents it has not met.
Writes books.json (every score, the command, the machine) and books-curve.png to --out (`--name` renames them).
"""

import json
import random
from pathlib import Path

import torch

from memgpt import MemGPT
from memgpt.training.batches import TaskPrompts
from memgpt.training.books import PLACES, BookSplits, RecallDoc
from memgpt.training.evaluate import held_out_docs, read_segments, recall_accuracy
from memgpt.training.recipe import FINAL, TRAIN_CONFIG

from .common import parser, print_table, record

CANDIDATES = 10
EXACT_CHANCE = (
    1 / len(PLACES) * 2 + 0
) / 3  # two of three kinds answer with a place; a number is ~never guessed
FINAL_SEED = 30_000_003  # not the training evaluation's (held_out_docs' default): documents it never showed
BATCH_DOCS = 8  # documents scored at once (x 10 candidates): the kv memory's rows stay in a few GB


def candidates(doc: RecallDoc, seed: int) -> list[str]:
    """The answer first, then nine others of its kind."""
    if doc.answer_text.isdigit():
        digits = len(doc.answer_text)
        lo, hi = max(11, 10 ** (digits - 1)), min(989, 10**digits - 1)
        pool = [str(n) for n in range(lo, hi + 1) if str(n) != doc.answer_text]
        return [doc.answer_text, *random.Random(seed).sample(pool, CANDIDATES - 1)]
    return [doc.answer_text, *[p.split()[-1] for p in PLACES if p.split()[-1] != doc.answer_text]]


@torch.no_grad()
def choice_accuracy(model: MemGPT, docs: list[RecallDoc], only_last: bool = False, seed: int = 0) -> float:
    """The share of documents whose answer is the most likely of its candidates after the question."""
    prompts, right = TaskPrompts(model.tokenizer), 0
    for start in range(0, len(docs), BATCH_DOCS):
        part = docs[start : start + BATCH_DOCS]
        state = read_segments(model, part, only_last)
        names = [candidates(d, seed + start + i) for i, d in enumerate(part)]
        rows = [
            (d.segments[-1] + d.question, prompts.encode(" " + c))
            for d, cs in zip(part, names, strict=True)
            for c in cs
        ]
        query = prompts.seq(rows)
        repeat = torch.arange(len(part)).repeat_interleave(CANDIDATES)
        logits = model(query.ids, query.mask, memory=state.select(repeat)).logits.float()
        labels = query.labels[:, 1:].to(logits.device)
        logp = logits[:, :-1].log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        scores = (logp * (labels != -100)).sum(-1).view(len(part), CANDIDATES)  # (B, K)
        right += int((scores.argmax(-1) == 0).sum())
    return right / len(docs)


def final_table(
    run: Path, segments: list[int], n_docs: int, exact_only: bool = False, seed: int = FINAL_SEED
) -> list[dict]:
    trained = MemGPT.from_pretrained(run / FINAL, device="cpu", dtype=torch.float32).eval()
    cfg = json.loads((run / FINAL / TRAIN_CONFIG).read_text())
    books = BookSplits(list(cfg["text_files"]))
    chunk = trained.config.chunk_size
    # kv with nothing dropped: every segment stays in context (the retrieval memory's default budget would also
    # keep all of these few hundred tokens, so it would be the same row)
    kv = MemGPT.from_backbone(trained.backbone, tokenizer=trained.tokenizer, memory="kv", chunk_size=chunk,
                              kv_budget=None)  # fmt: skip
    methods = {trained.config.memory: (trained, False), "last segment": (trained, True)}
    if not exact_only:
        methods["kv (full text)"] = (kv.eval(), False)
    rows = []
    for n in segments:
        docs = held_out_docs(trained, books, n, n_docs, seed=seed, question_first=cfg["question_first"])
        earlier = [d for d in docs if max(d.fact_segments) < n - 1]
        for name, (model, only_last) in methods.items():
            row = {"segments": n, "method": name, "exact": recall_accuracy(model, docs, only_last)}
            if earlier:
                row["exact, fact earlier"] = recall_accuracy(model, earlier, only_last)
                row["documents, fact earlier"] = len(earlier)
            if not exact_only:
                row["choice"] = choice_accuracy(model, docs, only_last)
            rows.append(row)
            print(rows[-1], flush=True)
    return rows


def learning_curve(run: Path) -> list[dict]:
    """The run's held-out evaluations, one row per evaluation."""
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    return [{"step": h["step"], **h["eval"]} for h in history if "eval" in h]


def plot(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    lengths = sorted({int(k.split("@")[1]) for r in curve for k in r if "@" in k})
    steps = [r["step"] for r in curve]
    for i, n in enumerate(lengths):
        color = f"C{i}"
        ax.plot(
            steps, [r.get(f"memory@{n}") for r in curve], color=color, marker="o", label=f"memory, {n} seg."
        )
        ax.plot(
            steps,
            [r.get(f"last@{n}") for r in curve],
            color=color,
            linestyle="--",
            label=f"last segment, {n}",
        )
    ax.axhline(EXACT_CHANCE, color="grey", linestyle=":", label="chance")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out answers right (greedy, exact)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("run", type=Path, help="a jobs.train output folder (task books)")
    p.add_argument("--segments", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--docs", type=int, default=64, help="held-out documents per length")
    p.add_argument("--seed", type=int, default=FINAL_SEED, help="draws the final table's documents")
    p.add_argument("--curve-only", action="store_true")
    p.add_argument(
        "--exact-only", action="store_true", help="no choice score and no kv row (minutes, not tens)"
    )
    p.add_argument("--out", type=Path, default=Path("docs/benchmark"))
    p.add_argument("--name", default="books", help="the files written: <name>.json and <name>-curve.png")
    args = p.parse_args(argv)
    curve = learning_curve(args.run)
    print_table(curve, f"held-out accuracy during training (exact; chance ~{EXACT_CHANCE:.2f})")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curve, args.out / f"{args.name}-curve.png")
    results = {"curve": curve}
    if not args.curve_only:
        results["final"] = final_table(args.run, args.segments, args.docs, args.exact_only, args.seed)
        print_table(results["final"], f"the final model on {args.docs} held-out documents per length")
    (args.out / f"{args.name}.json").write_text(json.dumps(record(**results), indent=1))


if __name__ == "__main__":
    main()
