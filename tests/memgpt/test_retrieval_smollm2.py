"""Retrieval memory on the real SmolLM2-135M-Instruct: a passkey found at twice its window."""

import pytest
import torch

from benchmarks.passkey import passkey_ids
from memgpt import MemGPT


@pytest.mark.slow
@pytest.mark.long  # twice the real 8,192-token window: minutes on a CPU
def test_the_passkey_is_found_at_twice_the_window(smollm2):
    window = smollm2.backbone.config.max_position_embeddings
    ids = passkey_ids(smollm2.tokenizer, 2 * window, depth=0.3, key="68142")
    model = MemGPT.from_backbone(
        smollm2.backbone, tokenizer=smollm2.tokenizer, memory="retrieval", chunk_size=512, kv_budget=1024,
        kv_recent=256,
    )  # fmt: skip
    with torch.inference_mode():
        out = model.generate(ids[None], max_new_tokens=7)
    assert len(ids) >= 2 * window - 64
    assert "68142" in smollm2.tokenizer.decode(out[0, len(ids) :])
