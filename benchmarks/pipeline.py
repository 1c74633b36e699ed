"""Pipeline overhead: end-to-end tokens/s of the Ray job with one actor vs an in-process loop calling the same
model code on the same documents; and the speed-up with two actors.

    python -m benchmarks.pipeline                  # ~30 s on 2 CPU cores (the shipped model)
    python -m benchmarks.pipeline --model random   # MemGPT's default config: more model work, ~2 minutes
    python -m benchmarks.pipeline --full           # 96 documents instead of 24
"""

import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray

from jobs.quickstart import make_corpus
from pipeline.actor import Extractor
from pipeline.config import ExtractConfig
from pipeline.io import read_corpus
from pipeline.run import run
from pipeline.stream import document_groups, group_table

from .common import command, machine, parser, print_table


def in_process(config: ExtractConfig) -> tuple[int, float]:
    """The same documents, groups and Extractor, called in a plain loop: no Ray at all.

    Returns tokens read and the seconds spent in the Extractor's calls (model time)."""
    docs, _ = read_corpus(config.input, config.read, "bench")
    extractor = Extractor(config, "bench")
    tokens, model_s = 0, 0.0
    for group in document_groups([d.to_row() | {"attempt": 1} for d in docs], config.batch_size):
        start = time.perf_counter()
        results = extractor(group_table(group)).to_pylist()
        model_s += time.perf_counter() - start
        tokens += sum(m["n_tokens"] for r in results for m in r["manifest"])
    return tokens, model_s


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--full", action="store_true", help="96 documents instead of 24")
    p.add_argument("--documents", type=int, default=None, help="number of generated documents")
    p.add_argument("--model", default=None, help="the job's --model (default: the shipped memgpt-small)")
    args = p.parse_args()
    n_docs = args.documents or (96 if args.full else 24)
    work = Path(tempfile.mkdtemp(prefix="memgpt-bench-"))
    corpus = make_corpus(work / "corpus", n_docs)
    base = dict(input=str(corpus), batch_size=3, model=args.model)  # the job's defaults otherwise: facts on
    rows = []
    try:
        start = time.perf_counter()
        tokens, model_s = in_process(ExtractConfig(output=str(work / "unused"), **base))
        loop_s = time.perf_counter() - start
        rows.append(row("in-process loop", tokens, loop_s, model_s, 1, loop_s, model_s))
        ray.init(log_to_driver=False)
        for workers in (1, 2):
            out = work / f"ray-{workers}"
            start = time.perf_counter()
            report = run(ExtractConfig(output=str(out), workers=workers, **base))
            seconds = time.perf_counter() - start
            busy = pd.read_parquet(out / "manifest")[
                "seconds"
            ].sum()  # per-document model seconds, all actors
            rows.append(
                row(
                    f"Ray job, {workers} actor(s)",
                    report.tokens_read,
                    seconds,
                    busy,
                    workers,
                    loop_s,
                    model_s,
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    model = args.model or "the shipped memgpt-small"
    print_table(rows, f"{n_docs} documents ({tokens:,} tokens), {model} (goal: 1 actor >= 0.8 of the loop)")
    print(
        "vs loop: wall-clock speed incl. start-up; model vs loop: speed of the model calls alone (per actor);"
    )
    print(
        "start-up+other: wall seconds not spent in model calls (worker start, model load, scheduling, writes)"
    )
    print(f"machine: {machine()}\ncommand: {command()}")


def row(runner: str, tokens: int, wall: float, busy: float, workers: int, loop_wall: float, loop_busy: float):
    return {
        "runner": runner,
        "seconds": wall,
        "tok/s": tokens / wall,
        "vs loop": loop_wall / wall,
        "model s": busy,
        "model vs loop": loop_busy / busy,
        "start-up+other s": wall - busy / workers,
    }


if __name__ == "__main__":
    main()
