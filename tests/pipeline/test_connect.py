"""The in-process Ray a run starts: actors that take every core must still get their documents."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from pipeline.run import local_cpus


@pytest.mark.parametrize("actors, cores, cpus", [(1, 2, 2), (2, 2, 3), (2.5, 2, 4), (0, 8, 8), (8, 8, 9)])
def test_the_local_ray_counts_a_cpu_more_than_the_actors_hold(actors, cores, cpus):
    assert local_cpus(actors, cores) == cpus


@pytest.mark.slow
def test_as_many_workers_as_cores_finish(tmp_path):
    """`--workers N` on N cores: the step that hands each actor one group needs a CPU too; without one more
    counted, the run waited forever (a fresh process, so that its Ray is the one `jobs.extract` starts)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_text(f"Mary Hale walked to the mill number {i}. She sang. " * 20)
    workers = str(os.cpu_count() or 1)
    argv = [sys.executable, "-m", "jobs.extract", "--input", str(corpus), "--output", str(tmp_path / "out"),
            "--model", "random", "--workers", workers, "--batch-size", "1", "--no-facts",
            "--max-new-tokens-summary", "4"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(pd.read_parquet(tmp_path / "out" / "summaries")) == 4
