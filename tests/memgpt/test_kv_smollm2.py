"""kv memory on the real SmolLM2-135M-Instruct (8,192-position window) reading a book past its window."""

from pathlib import Path

import pytest
import torch

from benchmarks.streaming import BIN, loss_curve
from memgpt import MemGPT

BOOK = Path(__file__).parents[3] / "shared" / "corpus" / "pride_and_prejudice.txt"
CHUNK = 512


@pytest.mark.slow
@pytest.mark.long  # twice the real 8,192-token window: minutes on a CPU
@pytest.mark.skipif(not BOOK.is_file(), reason=f"needs the book text at {BOOK}")
def test_loss_past_the_window_stays_that_inside_it(smollm2):
    window = smollm2.backbone.config.max_position_embeddings
    text = BOOK.read_text(encoding="utf-8")[5_000:]
    ids = torch.tensor(smollm2.tokenizer.encode(text)[: 2 * window])  # twice the window
    # spans of BIN tokens: inside from 2k tokens read (the context warmed), past from the window on
    inside, past = slice(1, window // BIN), slice(window // BIN, None)
    results = {}
    for positions in ("cache", "absolute"):
        model = MemGPT.from_backbone(
            smollm2.backbone, tokenizer=smollm2.tokenizer, chunk_size=CHUNK, kv_budget=1024, kv_recent=256,
            kv_positions=positions,
        )  # fmt: skip
        with torch.inference_mode():
            losses = torch.tensor(loss_curve(model, smollm2.backbone, ids, CHUNK, len(ids)))
        results[positions] = float(losses[past].mean() / losses[inside].mean())
    assert abs(results["cache"] - 1) < 0.05, results
    assert results["absolute"] > 1.10, results  # positions past the window: what the test guards against
