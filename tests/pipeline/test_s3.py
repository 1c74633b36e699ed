"""S3 for real: a local S3 server (moto in server mode, on 127.0.0.1, started here), addressed the AWS way
(AWS_ENDPOINT_URL, credentials, region), with input and output on s3:// through pyarrow.fs. A driver is SIGKILLed
mid-run and the job resumed; a writer is SIGKILLed mid-upload while a reader reads every committed table."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from pipeline_support import REPO, corpus_file, random_model
from test_reliability import ray_core, session_processes

from pipeline.output import Output

BUCKET = "memgpt-test"
N_DOCS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 for this module, and the AWS settings that address it (also set here)."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        os.environ.update(env)
        pafs.S3FileSystem(
            endpoint_override=url, access_key="testing", secret_key="testing", allow_bucket_creation=True
        ).create_dir(BUCKET)
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(timeout=30)


def upload_corpus(prefix: str) -> None:
    fs, root = pafs.FileSystem.from_uri(f"s3://{BUCKET}/{prefix}")
    plays = corpus_file("shakespeare.txt").read_text(encoding="utf-8")
    for i in range(N_DOCS):
        with fs.open_output_stream(f"{root}/play{i}.txt") as f:
            f.write(plays[i * 40_000 : i * 40_000 + 10_000 + 300 * i].encode())
    with fs.open_output_stream(f"{root}/empty.txt") as f:
        f.write(b"  \n")


def objects(prefix: str) -> list[str]:
    fs, root = pafs.FileSystem.from_uri(f"s3://{BUCKET}/{prefix}")
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path[len(root) + 1 :] for i in infos if i.type == pafs.FileType.File)


@pytest.mark.long  # ~2 minutes: two drivers, each with a Ray of its own
def test_a_run_killed_on_s3_resumes_and_keeps_each_document_once(s3_env, tmp_path):
    upload_corpus("corpus")
    model = random_model(tmp_path / "tiny", chunk_size=64)
    out_uri = f"s3://{BUCKET}/out"
    cmd = [sys.executable, "-m", "jobs.extract", "--input", f"s3://{BUCKET}/corpus", "--output", out_uri]
    cmd += ["--model", str(model), "--workers", "1", "--batch-size", "1", "--checkpoint-every", "2"]
    cmd += ["--max-new-tokens-facts", "4", "--max-new-tokens-summary", "4"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | s3_env
    driver = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while not [o for o in objects("out") if o.startswith("manifest/") and o.endswith(".parquet")]:
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.monotonic() < deadline, "no document committed in time"
            time.sleep(0.1)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert Output(out_uri).read("summaries").num_rows >= 1  # readers see whole objects only, even now
        deadline = time.monotonic() + 30
        while ray_core(session_processes(driver.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        done = Output(out_uri).names("manifest")
        assert 1 <= len(done) < N_DOCS, "killed too late to test a resume"

        again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert again.returncode == 0, again.stderr[-2000:]
        expected = f"{N_DOCS} documents ({N_DOCS - len(done)} processed, {len(done)} already done, 0 failed)"
        assert expected in again.stdout, again.stdout
    finally:
        for pid in session_processes(driver.pid):
            os.kill(pid, signal.SIGKILL)

    out = Output(out_uri)
    doc_ids = [f"play{i}.txt" for i in range(N_DOCS)]
    manifest = out.read("manifest").to_pydict()
    assert sorted(manifest["doc_id"]) == doc_ids and set(manifest["status"]) == {"ok"}
    assert set(manifest["attempts"]) == {1}  # finished documents were not processed again
    assert sorted(out.read("summaries")["doc_id"].to_pylist()) == doc_ids
    errors = out.read("errors").to_pylist()
    assert [(e["source"], e["error_type"]) for e in errors] == [("empty.txt", "EmptyDocument")]
    left = objects("out")
    assert not [o for o in left if "/.tmp-" in o or o.startswith((".tmp-", "_checkpoints/", "_read/"))], left


WRITER = """
import sys, pyarrow as pa
from pipeline.output import Output
from pipeline.schemas import FACTS
rows = int(sys.argv[2])
table = pa.table({name: pa.array([f"{name}-{i:09d}" for i in range(rows)]) if FACTS.field(name).type == pa.string()
                  else pa.array(range(rows), type=FACTS.field(name).type) for name in FACTS.names}, schema=FACTS)
out = Output(sys.argv[1])
for i in range(1000):
    out.write("facts", f"unit{i:04d}", table)
"""


def test_a_reader_never_sees_a_half_written_table_on_s3(s3_env, tmp_path):
    """S3 has no rename: a unit is uploaded whole to a hidden `.tmp-` key, then copied to its name (CopyObject
    makes the new key appear complete, at once) and the temp key deleted. A writer SIGKILLed mid-upload
    leaves at most a hidden temp key or an unfinished multipart upload, never a partial table under its name."""
    uri, rows = f"s3://{BUCKET}/atomic", 300_000  # ~10 MB a unit: a multipart upload
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    writer = subprocess.Popen(
        [sys.executable, str(script), uri, str(rows)],
        cwd=REPO,
        env=os.environ | s3_env | {"PYTHONPATH": str(REPO)},
    )
    out, checked = Output(uri), set()
    try:
        deadline = time.monotonic() + 120
        while len(checked) < 3:  # read every unit as soon as it is listed, while the next one is uploading
            assert writer.poll() is None and time.monotonic() < deadline, "the writer stopped early"
            for name in out.names("facts"):
                if name not in checked:
                    assert out.read_unit("facts", name).num_rows == rows, name
                    checked.add(name)
            time.sleep(0.05)
        time.sleep(0.3)  # the writer is inside its next upload
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    # A copy the writer sent just before it died is still carried out by the server: wait until the listing
    # settles, so that the checks below all see the same units.
    names, settled = out.names("facts"), time.monotonic() + 10
    while time.monotonic() < settled:
        time.sleep(1)
        names, before = out.names("facts"), names
        if names == before:
            break
    assert set(checked) <= set(names)
    for name in names:  # whatever the kill interrupted, every visible unit is whole
        assert out.read_unit("facts", name).num_rows == rows, name
    assert isinstance(out.read("facts"), pa.Table) and out.read("facts").num_rows == rows * len(names)
    out.remove_temp_files()  # what a resumed run does first
    assert not [o for o in objects("atomic") if ".tmp-" in o]
