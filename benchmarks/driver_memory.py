"""Driver memory and time to first commit as the corpus grows: the same job on N and 10 N generated documents.

    python -m benchmarks.driver_memory                         # 1,000 vs 10,000 documents, 1 KB - 1 MB each
    python -m benchmarks.driver_memory --sizes 200 2000 --max-kb 32 --done   # reads only (all already done)
    python -m benchmarks.driver_memory --first-commit          # seconds to the first committed document

Documents are log-uniform in size between --min-kb and --max-kb (Shakespeare's text), one in 50 bad (empty or
binary). Each size runs in a fresh driver process (`run()`, a local Ray, a tiny random MemGPT, summaries only)
that reports its own peak RSS (ru_maxrss of the driver alone, not of Ray's workers), the seconds from the start of
`run()` to the first committed document, and documents/s. With --done every document is marked finished first, so
the job reads and checks the whole corpus but gives the model nothing: what the driver holds, without model time.
"""

import argparse
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from memgpt import MemGPT, MemGPTConfig
from pipeline.config import ExtractConfig
from pipeline.io import safe_name
from pipeline.output import Output
from pipeline.schemas import MANIFEST, to_table

from .common import command, machine, print_table

REPO = Path(__file__).parents[1]
TEXT = REPO / ".." / "shared" / "corpus" / "shakespeare.txt"
TINY = {
    "model_type": "llama", "vocab_size": 4096, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
    "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1,
}  # fmt: skip


def make_corpus(root: Path, n_docs: int, min_kb: float, max_kb: float, seed: int = 0) -> int:
    """Write `n_docs` text files under `root` (one in 50 bad); return their total bytes."""
    rng, text = random.Random(seed), TEXT.read_text(encoding="utf-8")
    total = 0
    for i in range(n_docs):
        path = root / f"{i // 1000:03d}" / f"doc{i:06d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 50 == 49:
            data = b"" if i % 100 == 99 else b"\x00\x01binary"
        else:
            size = int(1024 * math.exp(rng.uniform(math.log(min_kb), math.log(max_kb))))
            start = rng.randrange(0, max(1, len(text) - size))
            data = (text[start : start + size] * (1 + size // len(text)))[:size].encode()
        path.write_bytes(data)
        total += len(data)
    return total


def mark_done(corpus: Path, output: Path) -> None:
    """A manifest row with status ok for every document: a run then reads all of them and processes none."""
    out = Output(str(output))
    for path in sorted(corpus.rglob("*.txt")):
        doc_id = str(path.relative_to(corpus))
        row = dict(doc_id=doc_id, status="ok", attempts=1, n_tokens=0, seconds=0.0, error=None, run_id="b")
        out.write("manifest", safe_name(doc_id), to_table([row | {"state": None}], MANIFEST))


def tiny_model(path: Path) -> Path:
    torch.manual_seed(0)
    MemGPT(
        MemGPTConfig(backbone=TINY, num_slots=2, chunk_size=128), device="cpu", dtype=torch.float32
    ).save_pretrained(path)
    return path


def measure(corpus: Path, output: Path, model: Path, workers: int) -> dict:
    """Run the job in this process; its driver's peak RSS, time to first commit and documents/s."""
    from pipeline.run import run

    first: list[float] = []
    start = time.perf_counter()

    def watch() -> None:
        while not first:
            if any((output / "manifest").glob("*.parquet")) and not first:
                first.append(time.perf_counter() - start)
            time.sleep(0.05)

    done_before = len(list((output / "manifest").glob("*.parquet"))) if output.exists() else 0
    watcher = threading.Thread(target=watch, daemon=not done_before)
    if not done_before:
        watcher.start()
    config = ExtractConfig(
        input=str(corpus), output=str(output), model=str(model), workers=workers, batch_size=4, facts=False
    )
    report = run(config)
    seconds = time.perf_counter() - start
    first.append(float("nan"))  # stops the watcher if nothing was committed
    return {
        "documents": report.documents,
        "processed": report.processed,
        "read errors": report.read_errors,
        "driver peak RSS MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first commit s": first[0],
        "seconds": seconds,
        "docs/s": report.documents / seconds,
    }


def measure_in_subprocess(corpus: Path, output: Path, model: Path, workers: int) -> dict:
    """`measure` in a fresh driver process (its peak RSS is its own)."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.driver_memory",
        "--measure",
        str(corpus),
        str(output),
        str(model),
    ]
    proc = subprocess.run([*cmd, str(workers)], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_commit(corpus: Path, output: Path, model: Path, workers: int, timeout: float = 600) -> float:
    """Seconds from starting `python -m jobs.extract` (a fresh process, its own Ray) to its first committed
    document; the job is then SIGKILLed with every process of its session."""
    cmd = [sys.executable, "-m", "jobs.extract", "--input", str(corpus), "--output", str(output)]
    cmd += ["--model", str(model), "--workers", str(workers), "--batch-size", "4", "--no-facts"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not any((output / "manifest").glob("*.parquet")):
            if proc.poll() is not None or time.perf_counter() - start > timeout:
                return float("nan")
            time.sleep(0.05)
        return time.perf_counter() - start
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.wait()


def _session(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="documents per corpus")
    p.add_argument("--min-kb", type=float, default=1.0)
    p.add_argument("--max-kb", type=float, default=1024.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--done", action="store_true", help="mark every document finished: measure the read only")
    p.add_argument(
        "--first-commit",
        action="store_true",
        help="only the seconds to the first commit (the job is then killed)",
    )
    p.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        corpus, output, model, workers = args.measure
        print(json.dumps(measure(Path(corpus), Path(output), Path(model), int(workers))))
        return
    work = Path(tempfile.mkdtemp(prefix="memgpt-driver-"))
    model = tiny_model(work / "model")
    rows = []
    for n in args.sizes:
        corpus, output = work / f"corpus-{n}", work / f"out-{n}"
        total = make_corpus(corpus, n, args.min_kb, args.max_kb)
        if args.first_commit:
            rows.append(
                {"corpus": f"{n} docs", "first commit s": first_commit(corpus, output, model, args.workers)}
            )
            continue
        if args.done:
            mark_done(corpus, output)
        rows.append(
            {"corpus": f"{n} docs, {total / 2**20:,.0f} MiB"}
            | measure_in_subprocess(corpus, output, model, args.workers)
        )
    what = "first commit only" if args.first_commit else "read only: all done" if args.done else "full job"
    print_table(rows, f"driver memory vs corpus size ({what})")
    print(f"outputs and corpora under {work} (delete when done)\nmachine: {machine()}\ncommand: {command()}")


if __name__ == "__main__":
    main()
