"""A real two-node Ray cluster on this machine: `ray start --head`, a second `ray start --address`, the job sent
with `ray job submit --working-dir <repo> -- python -m jobs.extract ...`, its outputs checked, the cluster stopped."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).parents[2]
RAY = Path(sys.executable).parent / "ray"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    with ExitStack() as stack:
        for s in socks:
            stack.enter_context(closing(s))
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def node_ports() -> list[str]:
    """Every port a node opens, chosen free, so this cluster cannot collide with another Ray on the machine."""
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    ]
    lo = free_ports(1)[0] % 20000 + 30000  # a worker port range unlikely to be taken
    args = [x for name, port in zip(names, free_ports(len(names)), strict=True) for x in (name, str(port))]
    return args + ["--min-worker-port", str(lo), "--max-worker-port", str(lo + 200)]


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group: terminating it takes its node down with it."""
    # on 127.0.0.1: a machine's own address may not take connections (a sandbox's interface, a firewall)
    cmd = [
        str(RAY),
        "start",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address",
        "127.0.0.1",
        *node_ports(),
        *args,
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM the `ray start --block` we started (it kills its node's processes), SIGKILL its group if stuck."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def add_worker_node(gcs: int, env: dict, tmp_path: Path) -> subprocess.Popen:
    """A second node of 2 CPUs joined to the head at port `gcs`, once the head is up; returns its process."""
    wait_for_nodes(f"127.0.0.1:{gcs}", 1, env)
    worker = start_node(["--address", f"127.0.0.1:{gcs}", "--num-cpus", "2"], env, tmp_path / "worker.log")
    wait_for_nodes(f"127.0.0.1:{gcs}", 2, env)
    return worker


def wait_for_nodes(address: str, n: int, env: dict, timeout: float = 90) -> None:
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(sum(node['Alive'] for node in ray.nodes()))"
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        # Ray turns 127.0.0.1 into the machine's own address, which may refuse connections; off a "cluster"
        # platform it keeps the loopback address the nodes were started on
        loopback = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        r = subprocess.run(
            [sys.executable, "-c", probe, address], env=loopback, capture_output=True, text=True
        )
        if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise TimeoutError(f"cluster at {address} did not reach {n} nodes: {r.stdout[-500:]} {r.stderr[-2000:]}")


@pytest.mark.long  # ~80 s: the suite's costliest test; the long tier's node-loss test submits to such a cluster too
def test_job_submitted_to_a_two_node_cluster(tmp_path, small_corpus, tiny_model):
    # Ray 2.60 `ray start` clusters authenticate with a token; `ray start` does not make one, so this cluster gets
    # its own through RAY_AUTH_TOKEN (the nodes, the probe and `ray job submit` all read it), whatever ~/.ray holds
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": ""}
    gcs, dashboard, client_port = free_ports(3)
    temp_dir = Path("/tmp") / f"rayc{gcs}"  # short: Ray's socket paths must fit in 107 bytes
    head = start_node(["--head", "--port", str(gcs), "--num-cpus", "1", "--include-dashboard", "true",
                       "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client_port),
                       "--temp-dir", str(temp_dir)], env, tmp_path / "head.log")  # fmt: skip
    worker = None
    try:
        worker = add_worker_node(gcs, env, tmp_path)

        out = tmp_path / "out"
        # two 1-CPU actors and a 1-CPU head: the second actor can only run on the second node
        submit = [str(RAY), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(REPO),
                  "--", sys.executable, "-m", "jobs.extract", "--input", str(small_corpus), "--output", str(out),
                  "--model", str(tiny_model), "--workers", "2", "--batch-size", "2", "--max-new-tokens-facts", "4",
                  "--max-new-tokens-summary", "4"]  # fmt: skip
        job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
        logs = job.stdout + job.stderr
        assert job.returncode == 0 and "succeeded" in logs, logs[-3000:]
        assert "5 documents (5 processed" in logs
        assert sorted(pd.read_parquet(out / "summaries")["doc_id"]) == [f"play{i}.txt" for i in range(5)]
        assert (pd.read_parquet(out / "manifest")["status"] == "ok").all()
    finally:
        for proc in (worker, head):
            if proc is not None:
                stop_node(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert head.poll() is not None and (worker is None or worker.poll() is not None)


def session_pids(sid: int, name: str | None = None) -> list[int]:
    """Live processes of session `sid` (a `ray start --block` we started leads its own), by `comm` if given."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z" and (name is None or comm == name):
            pids.append(int(entry.name))
    return pids


def driver_pids(marker: str) -> list[int]:
    """The `python -m jobs.extract` driver(s) whose command line names `marker` (the job's output)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"jobs.extract" in cmd and marker.encode() in cmd:
                pids.append(int(entry.name))
    return pids


def extractors(sid: int) -> list[int]:
    """Extractor actor processes of session `sid` (Ray names the process after the actor)."""
    found = []
    for pid in session_pids(sid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::") and b"Extractor" in cmd:
            found.append(pid)
    return found


def wait_for_commit(out: Path, job: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not list((out / "manifest").glob("*.parquet")):
        assert job.poll() is None, "the job ended before anything could be killed"
        assert time.monotonic() < deadline, "no document committed in time"
        time.sleep(0.1)


def assert_each_document_once(out: Path, doc_ids: list[str]) -> None:
    manifest = pd.read_parquet(out / "manifest")
    assert sorted(manifest["doc_id"]) == doc_ids and (manifest["status"] == "ok").all()
    assert sorted(pd.read_parquet(out / "summaries")["doc_id"]) == doc_ids
    assert not list(out.rglob(".tmp-*")) and not (out / "_read").exists()


@pytest.fixture
def big_corpus(tmp_path) -> Path:
    from pipeline_support import corpus_file

    root = tmp_path / "corpus"
    root.mkdir()
    plays = corpus_file("shakespeare.txt").read_text(encoding="utf-8")
    for i in range(N_BIG):
        (root / f"play{i:02d}.txt").write_text(plays[i * 20_000 : i * 20_000 + 12_000 + 200 * i])
    return root


N_BIG = 12


@pytest.mark.long  # ~3 minutes: a cluster, a node lost, a driver lost, three submissions
def test_a_lost_worker_node_and_a_lost_driver(tmp_path, big_corpus, tiny_model):
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": ""}
    gcs, dashboard, client_port = free_ports(3)
    temp_dir = Path("/tmp") / f"rayc{gcs}"
    head_args = ["--head", "--port", str(gcs), "--num-cpus", "2", "--include-dashboard", "true"]
    head_args += ["--dashboard-port", str(dashboard), "--ray-client-server-port", str(client_port)]
    head = start_node([*head_args, "--temp-dir", str(temp_dir)], env, tmp_path / "head.log")
    worker = None
    doc_ids = [f"play{i:02d}.txt" for i in range(N_BIG)]

    def submit(out: Path, workers: int) -> subprocess.Popen:
        cmd = [str(RAY), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}"]
        cmd += ["--working-dir", str(REPO), "--", sys.executable, "-m", "jobs.extract"]
        cmd += ["--input", str(big_corpus), "--output", str(out), "--model", str(tiny_model)]
        cmd += ["--workers", str(workers), "--batch-size", "1", "--checkpoint-every", "2"]
        cmd += ["--max-new-tokens-facts", "4", "--max-new-tokens-summary", "4"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    try:
        worker = add_worker_node(gcs, env, tmp_path)

        lose_the_worker_node(submit, tmp_path / "out", worker, doc_ids)
        lose_the_driver(submit, tmp_path / "out2", doc_ids)
    finally:
        for proc in (worker, head):
            if proc is not None:
                stop_node(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def lose_the_worker_node(submit, out: Path, worker: subprocess.Popen, doc_ids: list[str]) -> None:
    """The worker node's raylet SIGKILLed while documents are read and committed: the job finishes on what
    remains, or fails saying so and a rerun finishes it; every document once."""
    job = submit(out, workers=2)
    wait_for_commit(out, job)
    deadline = time.monotonic() + 60
    while not extractors(worker.pid):  # the node to lose holds an actor in the middle of the corpus
        assert time.monotonic() < deadline, "no Extractor actor on the worker node"
        time.sleep(0.1)
    raylets = session_pids(worker.pid, "raylet")
    assert len(raylets) == 1, raylets
    os.kill(raylets[0], signal.SIGKILL)
    logs = job.communicate(timeout=420)[0]
    first_done = len(list((out / "manifest").glob("*.parquet")))
    print(f"node lost: job exit {job.returncode}, {first_done} of {N_BIG} committed")
    if job.returncode != 0:  # failed: it must say so, and a rerun on what remains must finish the job
        assert "failed" in logs.lower(), logs[-3000:]
        rerun = submit(out, workers=1)
        logs = rerun.communicate(timeout=420)[0]
        assert rerun.returncode == 0, logs[-3000:]
        assert f"{N_BIG} documents (" in logs and f"{first_done} already done" in logs, logs[-3000:]
    else:
        assert f"{N_BIG} documents ({N_BIG} processed" in logs, logs[-3000:]
    assert_each_document_once(out, doc_ids)


def lose_the_driver(submit, out2: Path, doc_ids: list[str]) -> None:
    """The head's driver SIGKILLed mid-job, then the job submitted again: it resumes, every document once."""
    job = submit(out2, workers=1)
    wait_for_commit(out2, job)
    drivers = driver_pids(str(out2))
    assert drivers, "no driver process found"
    for pid in drivers:
        os.kill(pid, signal.SIGKILL)
    logs = job.communicate(timeout=120)[0]
    assert job.returncode != 0, logs[-3000:]
    done = len(list((out2 / "manifest").glob("*.parquet")))
    assert 1 <= done < N_BIG, "killed too late to test a resume"
    again = submit(out2, workers=1)
    logs = again.communicate(timeout=420)[0]
    assert again.returncode == 0, logs[-3000:]
    assert f"{N_BIG} documents ({N_BIG - done} processed, {done} already done, 0 failed)" in logs, logs[
        -3000:
    ]
    assert_each_document_once(out2, doc_ids)
    assert (pd.read_parquet(out2 / "manifest")["attempts"] == 1).all()
