"""The benchmarks run from a checkout with one command each; here at sizes that take seconds."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "pride_and_prejudice.txt"  # benchmarks.streaming reads it


def run_benchmark(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    return out.stdout


def ratios(text: str, reader: str) -> list[float | str]:
    """The last column of each table row that starts with `reader` (a number, or n/a)."""
    rows = [line for line in text.splitlines() if line.startswith(reader)]
    cells = [re.split(r"\s*\|\s*", row.strip())[-1] for row in rows]
    return [cell if cell == "n/a" else float(cell) for cell in cells]


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_file(), reason="the benchmarks read book text from ../shared/corpus")
def test_overhead_compares_both_memories_with_the_bare_backbone():
    text = run_benchmark("benchmarks.overhead", "--tokens", "512", "--layers", "1")
    assert "default backbone (1 layers)" in text and "command: python -m benchmarks.overhead" in text
    for reader in ("128   | slots", "128   | kv", "512   | slots", "512   | kv"):
        (ratio,) = ratios(text, reader)
        assert 0 < ratio < 10  # a measured ratio, not a speed target: a busy machine moves it (2.2 seen)


@pytest.mark.long  # minutes on 2 cores: the long tier
def test_gpu_benchmark_runs_on_a_cpu_at_a_small_size():
    text = run_benchmark(
        "benchmarks.gpu", "--layers", "1", "--batch", "1", "--tokens", "512", "--long", "10000"
    )
    assert "qwen2-0.5b shape, 1 layers" in text
    assert ratios(text, "bare backbone") == [1.0]
    for reader in ("slots (16)", "kv (budget 512)"):
        throughput, peak = ratios(text, reader)  # vs bare; peak vs the 10k read (n/a without CUDA)
        assert 0 < throughput < 10  # measured, not a target: a busy machine moves it
        assert peak == "n/a" or 0.5 < peak < 2.0


@pytest.mark.slow
def test_gpu_benchmark_refuses_a_long_document_shorter_than_its_comparison():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--long", "2000"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2 and "--long must be at least 10000" in out.stderr


@pytest.mark.long  # minutes on 2 cores: the long tier
@pytest.mark.skipif(not CORPUS.is_file(), reason=f"needs the book text at {CORPUS}")
def test_streaming_benchmark_runs_on_the_real_model(smollm2_path, tmp_path):
    # 2k tokens, one loss figure per method: kv-1024 already evicts (1024 entries kept of 2048 read)
    text = run_benchmark(
        "benchmarks.streaming", "--model", str(smollm2_path), "--tokens", "2048", "--methods", "full", "kv-1024",
        "no-memory", "--out", str(tmp_path),
    )  # fmt: skip
    assert "inside the window (0-2k): kv-1024" in text
    throughput = float(re.search(r"chunked forward: ([0-9.]+)", text).group(1))
    assert 0 < throughput < 10  # measured, not a target: a busy machine moves it
    for name in ("streaming.md", "streaming.json", "streaming.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.long  # ~25 s on the real model, as the other benchmarks' runs
def test_passkey_benchmark_runs_on_the_real_model(smollm2_path, tmp_path):
    text = run_benchmark(
        "benchmarks.passkey", "--model", str(smollm2_path), "--lengths", "1024", "--depths", "0.5",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert "| retrieval | 1/1 |" in text and "| full | 1/1 |" in text  # 1k tokens: inside every context
    for name in ("passkey.md", "passkey.json", "passkey.png"):
        assert (tmp_path / name).stat().st_size > 0
    # an earlier run's rows merged beside these: a longer text where only kv ran
    rows = json.loads((tmp_path / "passkey.json").read_text())["rows"]
    longer = [{**r, "tokens": 65536, "found": False} for r in rows if r["method"] == "kv"]
    (tmp_path / "long.json").write_text(json.dumps({"rows": longer}))
    merged = tmp_path / "merged"
    text = run_benchmark("benchmarks.passkey", "--merge", str(tmp_path / "passkey.json"), str(tmp_path / "long.json"),
                         "--out", str(merged))  # fmt: skip
    assert "| kv | 1/1 | 0/1 |" in text and "| retrieval | 1/1 | not run |" in text
    assert len(json.loads((merged / "passkey.json").read_text())["rows"]) == len(rows) + 1


@pytest.mark.long  # minutes on 2 cores: the long tier
@pytest.mark.skipif(not CORPUS.is_file(), reason="the benchmarks read book text from ../shared/corpus")
def test_planted_qa_benchmark_asks_planted_facts_inside_every_context(tmp_path):
    out = tmp_path / "planted_qa.json"
    text = run_benchmark("benchmarks.planted_qa", "--tokens", "1200", "--docs", "1", "--facts", "2",
                         "--methods", "full", "kv", "--save", str(out))  # fmt: skip
    assert "planted facts asked at the end" in text
    results = json.loads(out.read_text())["results"]
    assert [r["method"] for r in results] == ["full", "kv"] and all(
        r["right"].endswith("/2") for r in results
    )


@pytest.mark.long  # minutes on 2 cores: the long tier
@pytest.mark.skipif(not CORPUS.is_file(), reason="the benchmarks read book text from ../shared/corpus")
def test_chat_recall_and_continuation_benchmarks_run(tmp_path):
    recall = tmp_path / "recall.json"
    text = run_benchmark("benchmarks.chat_recall", "--tokens", "1500", "--facts", "2", "--methods", "kv", "truncated",
                         "--save", str(recall))  # fmt: skip
    assert "chat recall: 2 facts" in text and json.loads(recall.read_text())["results"][0]["tokens"] >= 1500
    cont = tmp_path / "continuation.json"
    text = run_benchmark("benchmarks.continuation", "--at", "1024", "--new-tokens", "4", "--save", str(cont))
    rows = json.loads(cont.read_text())["results"]
    assert [r["memory"] for r in rows] == ["kv", "retrieval"]
    assert all(r["at"] == 1024 and 0 < r["loss memory"] < 10 and r["cost ratio"] > 0 for r in rows)


@pytest.mark.long  # minutes on 2 cores: the long tier
@pytest.mark.skipif(not CORPUS.is_file(), reason="the benchmarks read book text from ../shared/corpus")
def test_recall_benchmark_asks_facts_planted_in_a_book(tmp_path):
    text = run_benchmark(
        "benchmarks.recall", "--lengths", "2048", "--methods", "truncated", "archival", "passage", "--tasks", "single",
        "passkey-filler", "--max-new-tokens", "12", "--out", str(tmp_path),
    )  # fmt: skip
    assert re.search(r"\| archival \| single \| \d+/10 \|", text), text[-2000:]
    assert "| archival | passkey-filler | 1/1 |" in text
    assert re.search(r"\| passage \| single \| \d+/10 \|", text) and "| passage | passkey" not in text
    assert re.search(r"\| archival \| \*sentences needed, recalled\* \| \d+/10 \|", text), text[-2000:]
    rows = json.loads((tmp_path / "recall.json").read_text())["rows"]
    assert {r["format"] for r in rows if r["task"] == "single"} == {"chat", "plain"}
    for name in ("recall.md", "recall.json", "recall.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_file(), reason=f"needs the book text at {CORPUS}")
def test_extraction_profile_accounts_for_the_job_and_compares_it_with_a_bare_read(smollm2_path):
    out = run_benchmark("benchmarks.extraction_profile", "--tokens", "600")
    shares = {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(r"^(\w[\w ():]*?)\s*\|\s*[\d.,]+\s*\|\s*([\d.]+)$", out, re.M)
    }
    # no notes: the default summary is made from the facts
    assert {"facts", "facts: reading the prompt", "reading", "writing", "the rest"} <= set(shares)
    assert 0.99 <= sum(shares.values()) <= 1.01  # the shares of the wall time
    assert shares["the rest"] <= 0.05  # the phases timed account for the run within 5 %
    ratio = float(re.search(r"ratio ([\d.]+)", out).group(1))
    assert 0 < ratio < 1  # extraction costs more than reading the same tokens
    passes = float(re.search(r"forward passes per generated token: ([\d.]+)", out).group(1))
    assert passes <= 0.3  # lookup decoding: fact lines are copies, several tokens a pass
    found = re.search(r"passes: ([\d,]+) positions carried, ([\d,]+) of", out).groups()
    carried, own = (int(n.replace(",", "")) for n in found)
    assert 0 < own <= carried  # a row's own tokens, of the positions its passes carried


def test_linear_layout_benchmark_times_both_layouts_of_each_weight_shape():
    from benchmarks.linear_layout import SHAPES

    out = run_benchmark("benchmarks.linear_layout", "--rows", "4", "36", "--megabytes", "8")
    rows = [re.split(r"\s*\|\s*", line.strip()) for line in out.splitlines() if re.match(r"\d+ x \d+ ", line)]
    assert [(r[0], int(r[1])) for r in rows] == [(f"{o} x {i}", n) for o, i in SHAPES for n in (4, 36)]
    for r in rows:
        row_ms, column_ms, speed_up = map(float, r[2:])
        assert row_ms > 0 and column_ms > 0
        assert speed_up == pytest.approx(row_ms / column_ms, rel=0.2)  # of the printed times, rounded


def test_linear_layout_int4_weights_multiply_as_their_grid_does():
    """The 4-bit weights --int4 times are the Q4_1 grid (d * q + m per group of 32), packed as torch's CPU
    kernel reads them: its products are the grid's, to fp32 rounding."""
    import torch

    from benchmarks.linear_layout import int4_weights

    torch.manual_seed(0)
    w = torch.randn(192, 576)
    packed, scales = int4_weights(w)
    groups = w.view(192, -1, 32)
    low = groups.amin(-1)
    d = ((groups.amax(-1) - low) / 15).clamp(min=1e-8)
    q = ((groups - low[..., None]) / d[..., None]).round().clamp(0, 15)
    grid = (q * d[..., None] + low[..., None]).view_as(w)
    x = torch.randn(4, 576)
    out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, scales)
    assert torch.allclose(out, x @ grid.t(), atol=1e-4) and not torch.allclose(out, x @ w.t(), atol=1e-2)
    rows = run_benchmark("benchmarks.linear_layout", "--rows", "4", "--megabytes", "4", "--int4")
    times = [line.split("|") for line in rows.splitlines() if re.match(r"\d+ x \d+ ", line)]
    assert len(times) == 4 and all(float(t[-1]) > 0 for t in times)  # the int4 column


def test_recall_benchmark_options_are_read_as_values():
    from benchmarks.recall import parse_overrides  # the same --set as jobs.train's

    assert parse_overrides(["archive_copy_bias=0", "archive_attend_heavy=true", "kv_positions=cache"]) == {
        "archive_copy_bias": 0, "archive_attend_heavy": True, "kv_positions": "cache"}  # fmt: skip
    with pytest.raises(SystemExit, match="key=value"):
        parse_overrides(["archive_copy_bias"])


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_file(), reason=f"needs the book text at {CORPUS}")
def test_books_recall_benchmark_reads_a_training_run(tmp_path):
    import torch

    from benchmarks.books_recall import CANDIDATES, candidates, main
    from memgpt.training import TrainConfig, train
    from memgpt.training.books import RecallDoc

    books = sorted(CORPUS.parent.glob("*.txt"))
    cfg = TrainConfig.from_yaml(REPO / "jobs" / "configs" / "train_ci.yaml", out_dir=str(tmp_path / "run"),
                                task="books", text_files=[str(b) for b in books], curriculum={0: 2}, max_steps=2,
                                eval_every=1, eval_segments=[1, 2], batch_size=2, lm_weight=0.0)  # fmt: skip
    train(cfg)
    main([str(tmp_path / "run"), "--docs", "3", "--segments", "1", "2", "--out", str(tmp_path / "out")])
    assert torch.is_grad_enabled()  # it ran in this process: later tests train
    result = json.loads((tmp_path / "out" / "books.json").read_text())
    assert [r["step"] for r in result["curve"]] == [1, 2]
    final = {(r["segments"], r["method"]): r for r in result["final"]}
    assert set(final) == {(n, m) for n in (1, 2) for m in ("slots", "last segment", "kv (full text)")}
    # one segment is all in the query: nothing is read into memory either way, so both score alike
    assert final[(1, "slots")] == final[(1, "last segment")] | {"method": "slots"}
    assert (tmp_path / "out" / "books-curve.png").stat().st_size > 0

    # the final table's documents are none of those the run's evaluations showed during training
    from benchmarks.books_recall import FINAL_SEED
    from memgpt import MemGPT
    from memgpt.training.books import BookSplits
    from memgpt.training.evaluate import held_out_docs
    from memgpt.training.recipe import FINAL

    model, splits = MemGPT.from_pretrained(tmp_path / "run" / FINAL), BookSplits(cfg.text_files)
    shown = {str(d.segments) for d in held_out_docs(model, splits, 2, 8)}
    judged = {str(d.segments) for d in held_out_docs(model, splits, 2, 8, seed=FINAL_SEED)}
    assert len(judged) == 8 and not shown & judged

    number = RecallDoc([[0]], [0], [0], "417", [0])
    for doc in (number, RecallDoc([[0]], [0], [0], "chapel", [0])):
        names = candidates(doc, seed=1)
        assert names[0] == doc.answer_text and len(set(names)) == CANDIDATES
    assert all(len(n) == 3 and n.isdigit() for n in candidates(number, seed=1))
