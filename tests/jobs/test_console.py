"""What jobs.extract prints: a line per finished document, and Ray's own messages only from warnings up."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.console import DocumentProgress, document_line
from pipeline.output import Output
from pipeline.schemas import TABLES, to_table

REPO = Path(__file__).parents[2]
MAX_LINES = 20  # issue 24: the README's main command prints at most 20 lines


def manifest_row(doc_id: str, status: str = "ok", **changes) -> dict:
    row = dict(doc_id=doc_id, status=status, attempts=1, n_tokens=2164, seconds=96.24, error=None, run_id="r")
    return row | {"state": None} | changes


def commit(out: Output, row: dict) -> None:
    out.write("manifest", row["doc_id"], to_table([row], TABLES["manifest"]))


def test_a_document_line_says_what_became_of_it():
    assert document_line(manifest_row("README.md")) == "README.md: 2,164 tokens in 96.2s"
    failed = manifest_row("x.txt", "error", error="x.txt: ValueError: bad")
    assert document_line(failed) == "x.txt: failed: x.txt: ValueError: bad"


def test_progress_prints_each_document_committed_after_it_started(tmp_path):
    out = Output(str(tmp_path / "out"))
    commit(out, manifest_row("done-before.txt"))  # an earlier run's document: not this run's work
    printed = io.StringIO()
    with DocumentProgress(out.root, stream=printed, every_s=0.05) as progress:
        commit(out, manifest_row("a.txt"))
        progress.poll()
        commit(out, manifest_row("b.txt", "error", error="b.txt: OSError: gone"))
    lines = printed.getvalue().splitlines()
    assert lines == ["[1] a.txt: 2,164 tokens in 96.2s", "[2] b.txt: failed: b.txt: OSError: gone"]


def test_progress_of_a_missing_output_is_silent(tmp_path):
    printed = io.StringIO()
    with DocumentProgress(str(tmp_path / "not-yet"), stream=printed, every_s=0.05):
        pass
    assert printed.getvalue() == ""


@pytest.mark.slow
def test_the_console_has_a_line_per_document_and_no_ray_info(small_corpus, tiny_model, tmp_path):
    """The real command in a fresh process (Ray's loggers are set up at import): Ray's INFO lines and Ray
    Data's progress logging stay off a non-interactive console; each document gets one line. About 30 s.

    With as many workers as cores: the step that hands each actor one group needs a CPU too; without one more
    counted in the Ray a run starts, the run waited forever."""
    cmd = [sys.executable, "-m", "jobs.extract", "--input", str(small_corpus), "--output",
           str(tmp_path / "o")]  # fmt: skip
    options = ["--model", str(tiny_model), "--max-new-tokens-facts", "4", "--max-new-tokens-summary", "4",
               "--workers", str(os.cpu_count() or 1)]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    env.pop("RAY_LOGGER_LEVEL", None)
    proc = subprocess.run([*cmd, *options], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = (proc.stdout + proc.stderr).splitlines()
    assert proc.returncode == 0, proc.stderr
    assert len(lines) <= MAX_LINES, "\n".join(lines)
    assert not [line for line in lines if " INFO " in line or "logging_progress" in line], "\n".join(lines)
    done = sorted(m[1] for m in map(re.compile(r"\[\d+\] ([^:]+):").match, lines) if m)
    assert done == [f"play{i}.txt" for i in range(5)], "\n".join(lines)
