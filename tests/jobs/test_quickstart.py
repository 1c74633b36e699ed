"""The README's main command, as a user runs it: its own corpus, local Ray, the shipped default model."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).parents[2]


@pytest.mark.slow
def test_quickstart_runs_offline_and_shows_the_tables(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    cmd = [
        sys.executable,
        "-m",
        "jobs.quickstart",
        "--output",
        str(tmp_path),
        "--documents",
        "2",
        "--workers",
        "1",
    ]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "== summaries: 2 rows" in run.stdout and "== facts:" in run.stdout, run.stdout[-3000:]

    summaries = pd.read_parquet(tmp_path / "tables" / "summaries")
    assert sorted(summaries["doc_id"]) == ["story-00.txt", "story-01.txt"]
    assert summaries["summary"].str.len().min() > 0
    facts = pd.read_parquet(tmp_path / "tables" / "facts")
    stories = "".join(p.read_text() for p in (tmp_path / "corpus").glob("*.txt"))
    assert len(facts) and facts["subject"].map(lambda s: s in stories).mean() >= 0.5  # names from the text
