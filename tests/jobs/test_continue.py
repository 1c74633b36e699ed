"""jobs.continue on the real SmolLM2-135M-Instruct: a book's opening read into memory, then continued."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).parents[2]
BOOK = REPO.parent / "shared" / "corpus" / "pride_and_prejudice.txt"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_continue(*flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.continue", *flags]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.skipif(not BOOK.is_file(), reason=f"needs the book text at {BOOK}")
def test_a_book_is_read_and_continued_by_n_tokens(tmp_path, smollm2):
    tok = smollm2.tokenizer
    ids = tok.encode(BOOK.read_text(encoding="utf-8")[20_000:])[:1_000]  # two chunks: one into memory
    text = tmp_path / "book.txt"
    text.write_text(tok.decode(ids), encoding="utf-8")
    run = run_continue("--input", str(text), "--max-new-tokens", "16")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "reading" in run.stderr and "wrote 16 tokens" in run.stderr, run.stderr[-2000:]
    # within the kv budget nothing is evicted: the continuation is the backbone's own over the whole text
    prompt = torch.tensor([tok.encode(text.read_text(encoding="utf-8"))])
    with torch.inference_mode():
        out = smollm2.backbone.generate(prompt, max_new_tokens=16, do_sample=False, eos_token_id=-1)
    expected = tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)
    assert run.stdout.strip() == expected.strip() and expected.strip()


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_missing_or_empty_input_fails_in_one_line(tmp_path, content, capsys):
    # in this process: the input is refused before a model is loaded ("continue" is a keyword: no `from` import)
    main = importlib.import_module("jobs.continue").main

    path = tmp_path / "book.txt"
    if content is not None:
        path.write_text(content)
    assert main(["--input", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("jobs.continue: error: "), err
