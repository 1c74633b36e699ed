"""Reliability: a SIGKILLed driver resumes, a killed actor is retried, mid-document checkpoints resume a read.

Real processes are killed (the `jobs.extract` driver with SIGKILL, an Extractor actor's worker process with
SIGKILL), real files are read back with pandas, and Ray is real: no mocks.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from pipeline_support import REPO, corpus_file, random_model

from pipeline.actor import Extractor
from pipeline.checkpoints import FOLDER, Checkpoints, group_key
from pipeline.config import ExtractConfig
from pipeline.run import run
from pipeline.sink import ResultSink

N_DOCS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    plays = corpus_file("shakespeare.txt").read_text(encoding="utf-8")
    for i in range(N_DOCS):
        (root / f"play{i}.txt").write_text(plays[i * 40_000 : i * 40_000 + 20_000 + 300 * i])
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("model") / "tiny", chunk_size=64)


def cli_args(corpus: Path, out: Path, model: Path) -> list[str]:
    return [
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--model",
        str(model),
        "--workers",
        "1",
        "--batch-size",
        "1",
        "--max-new-tokens-facts",
        "4",
        "--max-new-tokens-summary",
        "4",
        "--checkpoint-every",
        "2",
    ]


def config_of(corpus: Path, out: Path, model: Path, **kw) -> ExtractConfig:
    kw = (
        dict(workers=1, batch_size=1, max_new_tokens_facts=4, max_new_tokens_summary=4, checkpoint_every=2)
        | kw
    )
    return ExtractConfig(input=str(corpus), output=str(out), model=str(model), **kw)


def tables(out: Path) -> dict[str, pd.DataFrame]:
    """Every result table as readers see it, sorted, without the wall-clock column."""
    result = {}
    for name in ("summaries", "facts", "manifest", "entities"):
        df = pd.read_parquet(out / name).drop(columns=["seconds"], errors="ignore")
        keys = [c for c in ("doc_id", "chunk_index", "subject", "entity") if c in df.columns]
        result[name] = df.sort_values(keys).reset_index(drop=True)
    return result


def assert_each_document_once(out: Path, doc_ids: list[str]) -> None:
    t = tables(out)
    assert sorted(t["summaries"]["doc_id"]) == sorted(doc_ids)
    assert sorted(t["manifest"]["doc_id"]) == sorted(doc_ids) and (t["manifest"]["status"] == "ok").all()
    facts = t["facts"]
    assert not facts.duplicated(["doc_id", "subject", "relation", "object"]).any()
    assert not list(out.rglob(".tmp-*")), "half-written files left behind"
    assert not list((out / FOLDER).glob("*")) if (out / FOLDER).exists() else True, "checkpoints left behind"


def session_processes(sid: int) -> list[int]:
    """Live processes of session `sid` (the killed driver's session: its in-process Ray lives there)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


def ray_core(pids: list[int]) -> list[str]:
    """The GCS, raylet and worker processes among `pids`. Ray 2.60's DashboardAgent and RuntimeEnvAgent log
    "Raylet is dead! Exiting" but can hang on in sleep; the test kills those itself (see docs/reliability.md)."""
    names = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "Agent" not in cmd:
            names.append(f"{pid} {cmd[:80]}")
    return names


@pytest.mark.long  # ~75 s, two fresh drivers; tests/jobs/test_cluster.py's long test kills a submitted one too
def test_sigkilled_driver_resumes_and_keeps_each_document_once(corpus, model, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray, not the tests' one
    cmd = [sys.executable, "-m", "jobs.extract", *cli_args(corpus, out, model)]
    driver = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        # ~1 s per document: the rest outlasts the writes that finish while Ray notices the driver is gone
        while not list((out / "manifest").glob("*.parquet")):  # a document committed
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "no document committed in time"
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: its Ray must notice on its own
        driver.wait()
        assert len(pd.read_parquet(out / "summaries")) >= 1  # readers see whole files only, even now

        deadline = time.monotonic() + 30  # the in-process Ray's raylet and GCS share the driver's fate
        while ray_core(session_processes(driver.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        lingering = ray_core(session_processes(driver.pid))
        done = {p: p.stat().st_mtime_ns for p in (out / "manifest").glob("*.parquet")}  # no writer is left
        assert 1 <= len(done) < N_DOCS, "killed too late to test a resume"

        again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr[-2000:]
        assert (
            f"{N_DOCS} documents ({N_DOCS - len(done)} processed, {len(done)} already done, 0 failed)"
            in again.stdout
        )
        assert not lingering, f"processes of the killed driver's Ray still alive after 30 s: {lingering}"
    finally:
        for pid in session_processes(driver.pid):  # whatever this test started and is still there
            os.kill(pid, signal.SIGKILL)

    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished documents were not processed again
    doc_ids = [f"play{i}.txt" for i in range(N_DOCS)]
    assert_each_document_once(out, doc_ids)
    assert (pd.read_parquet(out / "manifest")["attempts"] == 1).all()


@pytest.mark.long  # ~50 s, two runs; tests/jobs/test_cluster.py's long test loses an actor with its node too
@pytest.mark.usefixtures("ray_session")
def test_killed_actor_is_restarted_and_output_is_complete(corpus, model, tmp_path):
    """SIGKILL the Extractor actor's worker process while it is in the middle of a document."""
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_actor_mid_document():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if list((out / FOLDER).rglob("*.safetensors")):  # a group is half-read: its checkpoint exists
                pids = extractor_processes()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_actor_mid_document)
    killer.start()
    report = run(config_of(corpus, out, model, checkpoint_every=1))
    killer.join()
    assert killed, "the actor was never killed"
    assert report.processed == N_DOCS and report.failed == 0
    assert_each_document_once(out, [f"play{i}.txt" for i in range(N_DOCS)])
    pd.testing.assert_frame_equal(
        tables(out)["summaries"], tables(uninterrupted(corpus, model, tmp_path))["summaries"]
    )


def uninterrupted(corpus: Path, model: Path, tmp_path: Path) -> Path:
    run(config_of(corpus, tmp_path / "plain", model, checkpoint_every=0))
    return tmp_path / "plain"


def extractor_processes() -> list[int]:
    """Pids of Ray worker processes that hold an Extractor actor (Ray names the process after the actor)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::") and b"Extractor" in cmdline:
                pids.append(int(entry.name))
    return pids


def group(texts: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"doc_id": f"d{i}", "source": f"d{i}.txt", "title": None, "text": t, "group": 0, "attempt": 1}
            for i, t in enumerate(texts)
        ]
    )


def without_seconds(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    for r in rows:
        for name in ("summaries", "manifest"):
            for row in r[name]:
                row.pop("seconds")
    return rows


def test_a_read_resumed_from_a_checkpoint_equals_an_uninterrupted_one(fact_model, tmp_path):
    book = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")
    batch = group([book[10_000:16_000], book[20_000:23_000]])
    key = group_key(["d0", "d1"])

    def extractor(out: str, checkpoint_every: int) -> Extractor:
        config = ExtractConfig(input="-", output=str(tmp_path / out), model=str(fact_model), max_new_tokens_facts=12,
                               max_new_tokens_summary=10, checkpoint_every=checkpoint_every)  # fmt: skip
        return Extractor(config, "r")

    plain = extractor("a", checkpoint_every=0)
    expected = without_seconds(plain(batch))
    assert not (tmp_path / "a" / FOLDER).exists()

    ex = extractor("b", checkpoint_every=3)
    first = ex(batch)  # reads from chunk 0 and leaves its last checkpoint (the sink has not committed it)
    assert ex.resumed_from[key] == 0 and without_seconds(first) == expected
    saved = sorted(p.name for p in (tmp_path / "b" / FOLDER / key).iterdir())
    assert len(saved) == 2 and saved[0].endswith(".json") and saved[1].endswith(".safetensors")  # newest only
    assert sum(r["summaries"][0]["n_chunks"] for r in first.to_pylist()) > 6

    resumed = ex(batch)  # the retried call: starts at the checkpoint, not at chunk 0
    assert ex.resumed_from[key] > 0 and without_seconds(resumed) == expected
    assert Checkpoints(str(tmp_path / "b")).keys() == [key]

    sink = ResultSink(str(tmp_path / "b"))
    sink.write([resumed], ctx=None)  # commit the group: its checkpoint goes
    assert Checkpoints(str(tmp_path / "b")).keys() == []
    assert sorted(pd.read_parquet(tmp_path / "b" / "summaries")["doc_id"]) == ["d0", "d1"]


@pytest.mark.slow
def test_a_checkpoint_of_another_model_is_refused_naming_both(fact_model, corpus, tmp_path):
    out = tmp_path / "out"
    book = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")
    batch = group([book[10_000:16_000]])
    ex = Extractor(
        ExtractConfig(
            input="-",
            output=str(out),
            model=str(fact_model),
            max_new_tokens_facts=4,
            max_new_tokens_summary=4,
            checkpoint_every=2,
        ),
        "r",
    )
    ex(batch)
    assert Checkpoints(str(out)).keys()
    other = random_model(tmp_path / "other", memory="kv")  # the same backbone, another kind of memory
    with pytest.raises(ValueError, match=r"does not fit model .*other.*'slots'.*'kv'"):
        Extractor(
            ExtractConfig(input="-", output=str(out), model=str(other), checkpoint_every=2), "r"
        ).extract(batch.to_pylist())

    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    # a real process: its stderr is all a user sees (transformers logs past pytest's capture of this one)
    cmd = [sys.executable, "-m", "jobs.extract", "--input", str(corpus), "--output", str(out)]
    proc = subprocess.run(
        [*cmd, "--model", str(other), "--checkpoint-every", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err  # one line
    assert err.startswith(f"jobs.extract: error: ValueError: checkpoint {out}/{FOLDER}/")
    assert "does not fit model" in err and str(other) in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written
    assert not list(out.rglob("*.parquet"))
