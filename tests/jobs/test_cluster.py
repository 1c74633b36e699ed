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


def wait_for_nodes(address: str, n: int, env: dict, timeout: float = 90) -> None:
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(sum(node['Alive'] for node in ray.nodes()))"
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise TimeoutError(f"cluster at {address} did not reach {n} nodes: {r.stdout[-500:]} {r.stderr[-2000:]}")


@pytest.mark.slow
def test_job_submitted_to_a_two_node_cluster(tmp_path, small_corpus, tiny_model):
    # Ray 2.60 `ray start` clusters authenticate with a token; `ray start` does not make one, so this cluster gets
    # its own through RAY_AUTH_TOKEN (the nodes, the probe and `ray job submit` all read it), whatever ~/.ray holds
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": ""}
    gcs, dashboard, client_port = free_ports(3)
    temp_dir = Path("/tmp") / f"rayc{gcs}"  # short: Ray's socket paths must fit in 107 bytes
    head = start_node(
        [
            "--head",
            "--port",
            str(gcs),
            "--num-cpus",
            "1",
            "--include-dashboard",
            "true",
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(client_port),
            "--temp-dir",
            str(temp_dir),
        ],
        env,
        tmp_path / "head.log",
    )
    worker = None
    try:
        wait_for_nodes(f"127.0.0.1:{gcs}", 1, env)
        worker = start_node(
            ["--address", f"127.0.0.1:{gcs}", "--num-cpus", "2"], env, tmp_path / "worker.log"
        )
        wait_for_nodes(f"127.0.0.1:{gcs}", 2, env)

        out = tmp_path / "out"
        # two 1-CPU actors and a 1-CPU head: the second actor can only run on the second node
        submit = [
            str(RAY),
            "job",
            "submit",
            "--address",
            f"http://127.0.0.1:{dashboard}",
            "--working-dir",
            str(REPO),
            "--",
            sys.executable,
            "-m",
            "jobs.extract",
            "--input",
            str(small_corpus),
            "--output",
            str(out),
            "--model",
            str(tiny_model),
            "--workers",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens-facts",
            "4",
            "--max-new-tokens-summary",
            "4",
        ]
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
