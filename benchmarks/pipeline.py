"""Pipeline overhead: end-to-end tokens/s of the Ray job with one actor vs an in-process loop calling the same
model code on the same documents; and the speed-up with two actors.

    python -m benchmarks.pipeline          # ~3 minutes on 2 CPU cores
    python -m benchmarks.pipeline --full   # more and longer documents
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import ray

from jobs.quickstart import make_corpus
from pipeline.actor import Extractor
from pipeline.config import ExtractConfig
from pipeline.io import read_corpus
from pipeline.run import document_groups, pending, run

from .common import command, machine, print_table


def in_process(config: ExtractConfig) -> int:
    """The same documents, groups and Extractor, called in a plain loop: no Ray at all. Returns tokens read."""
    docs, _ = read_corpus(config.input, config.read, "bench")
    extractor = Extractor(config, "bench")
    tokens = 0
    for group in document_groups(pending(docs, _empty_manifest()), config.batch_size):
        for result in extractor(group).to_pylist():
            tokens += sum(m["n_tokens"] for m in result["manifest"])
    return tokens


def _empty_manifest():
    from pipeline.schemas import MANIFEST

    return MANIFEST.empty_table()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true")
    args = p.parse_args()
    n_docs = 12 if args.full else 4
    work = Path(tempfile.mkdtemp(prefix="memgpt-bench-"))
    corpus = make_corpus(work / "corpus", n_docs)
    base = dict(input=str(corpus), batch_size=2, max_new_tokens_facts=16, max_new_tokens_summary=32)
    rows = []
    try:
        start = time.perf_counter()
        tokens = in_process(ExtractConfig(output=str(work / "unused"), **base))
        loop_s = time.perf_counter() - start
        rows.append(
            {"runner": "in-process loop", "seconds": loop_s, "tok/s": tokens / loop_s, "vs loop": 1.0}
        )
        ray.init(log_to_driver=False)
        for workers in (1, 2):
            start = time.perf_counter()
            report = run(ExtractConfig(output=str(work / f"ray-{workers}"), workers=workers, **base))
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "runner": f"Ray job, {workers} actor(s)",
                    "seconds": seconds,
                    "tok/s": report.tokens_read / seconds,
                    "vs loop": loop_s / seconds,
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(
        rows, f"{n_docs} documents, tokens read per second of wall time incl. start-up (goal: 1 actor >= 0.8)"
    )
    print(f"machine: {machine()}\ncommand: {command()}")


if __name__ == "__main__":
    main()
