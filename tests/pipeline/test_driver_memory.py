"""The driver does not hold the corpus: its peak RSS stays flat from a small corpus to one 15 times larger.

Both corpora are read in full by the job (every document already marked finished, so the model has nothing to
do and the test measures the read path only); one driver process runs the small one, then the large one, and
reports its own peak RSS (ru_maxrss) after each. A driver that loaded the corpus (as `read_corpus` +
`ray.data.from_arrow` did) grows by at least the corpus' size; benchmarks/driver_memory.py runs 1,000 vs 10,000."""

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


@pytest.mark.long  # ~50 s: two corpora read by a driver of its own
def test_driver_peak_rss_does_not_grow_with_the_corpus(tmp_path):
    model = random_model(tmp_path / "model", chunk_size=64)
    sizes = {"small": (20, 0), "large": (300, 0)}
    args = []
    for name, (n, _) in sizes.items():
        total = make_corpus(tmp_path / name, n, min_kb=150, max_kb=250)
        sizes[name] = (n, total)
        mark_done(tmp_path / name, tmp_path / f"out-{name}")
        args += [str(tmp_path / name), str(tmp_path / f"out-{name}")]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(model), *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    small, large = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert (small["documents"], large["documents"]) == (20 - 0, 300 - 6)  # one in 50 is bad
    assert small["processed"] == large["processed"] == 0 and large["read errors"] == 6
    corpus_mib = (sizes["large"][1] - sizes["small"][1]) / 2**20
    growth = large["driver peak RSS MiB"] - small["driver peak RSS MiB"]
    assert corpus_mib > 50 and growth < corpus_mib / 4, (growth, corpus_mib, small, large)
