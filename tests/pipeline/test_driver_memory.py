"""The driver does not hold the corpus: its peak RSS stays flat from a small corpus to one many times larger.

One driver process runs the job on the small corpus, then on the large one, and reports its own peak RSS
(ru_maxrss) after each. benchmarks/driver_memory.py runs 1,000 vs 10,000 documents."""

import json
import os
import subprocess
import sys

import pytest
from pipeline_support import REPO, random_model

from benchmarks.driver_memory import make_corpus, mark_done

MEASURE = """
import json, sys
from pathlib import Path
from benchmarks.driver_memory import measure
model, runs = Path(sys.argv[1]), sys.argv[2:]
for corpus, output in zip(runs[::2], runs[1::2]):
    print(json.dumps(measure(Path(corpus), Path(output), model, 1)), flush=True)
"""


def measure_both(tmp_path, sizes: dict, kb: tuple[float, float], done: bool) -> tuple[dict, dict, float]:
    """The driver's figures after the small corpus and after the large one; MiB of text between the two."""
    model = random_model(tmp_path / "model", chunk_size=64)
    args, totals = [], {}
    for name, n in sizes.items():
        totals[name] = make_corpus(tmp_path / name, n, min_kb=kb[0], max_kb=kb[1])
        if done:
            mark_done(tmp_path / name, tmp_path / f"out-{name}")
        args += [str(tmp_path / name), str(tmp_path / f"out-{name}")]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(model), *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    small, large = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    return small, large, (totals["large"] - totals["small"]) / 2**20


@pytest.mark.long  # ~50 s: two corpora read by a driver of its own
def test_driver_peak_rss_does_not_grow_with_the_corpus_read(tmp_path):
    # every document already finished: the job reads and checks the whole corpus, the model has nothing to do. A
    # driver that loaded the corpus (as `read_corpus` + `ray.data.from_arrow` did) grew by the corpus' size
    small, large, corpus_mib = measure_both(tmp_path, {"small": 20, "large": 300}, (150, 250), done=True)
    assert (small["documents"], large["documents"]) == (20 - 0, 300 - 6)  # one in 50 is bad
    assert small["processed"] == large["processed"] == 0 and large["read errors"] == 6
    growth = large["driver peak RSS MiB"] - small["driver peak RSS MiB"]
    assert corpus_mib > 50 and growth < corpus_mib / 4, (growth, corpus_mib, small, large)


@pytest.mark.long  # ~5 min: 800 documents through the model
def test_driver_peak_rss_does_not_grow_with_the_documents_processed(tmp_path):
    # groups of short documents are under Ray's inline limit, so the driver itself holds each one until an actor
    # takes it, and the results after: reads running ahead of the actors, and freed pages glibc kept, made the
    # driver grow with the documents processed, and the end of the run read the facts of all of them at once
    # (docs/performance.md 5b). Measured: 9.9 MiB of text added; growth 37 MiB before the fixes, 16 after
    small, large, corpus_mib = measure_both(tmp_path, {"small": 100, "large": 700}, (12, 24), done=False)
    assert (small["processed"], large["processed"]) == (98, 686)
    growth = large["driver peak RSS MiB"] - small["driver peak RSS MiB"]
    assert corpus_mib > 9 and growth < 2 * corpus_mib, (growth, corpus_mib, small, large)
