import pytest
import torch
from tiny import random_doc, tiny
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from memgpt import MemoryState
from memgpt.kv import sdpa_with_window_scores
from memgpt.retrieval import Retrieving

SINKS, RECENT, BLOCK = 4, 44, 16


def retrieval_model(**options):
    # sinks + recent fill the budget: the evicted entries, hence the stored blocks, are known tokens in order
    options = {"kv_budget": SINKS + RECENT, "kv_sinks": SINKS, "kv_recent": RECENT, "retrieval_block": BLOCK,
               "retrieval_topk": 1, **options}  # fmt: skip
    return tiny("llama", memory="retrieval", **options)


def test_a_matching_block_is_retrieved_and_attended_exactly():
    model = retrieval_model()
    doc = random_doc(400, seed=11)
    with torch.no_grad():
        state = model.read([doc])
    stored = int(state.tensors["host_len"][0])
    assert stored == 400 - SINKS - RECENT  # every evicted entry is kept
    block = 7  # tokens doc[4 + 7 * 16 : 4 + 8 * 16], retrieved into the positions right after the sinks
    tokens = doc[SINKS + block * BLOCK : SINKS + (block + 1) * BLOCK]
    place = torch.arange(SINKS, SINKS + BLOCK)[None]
    with torch.no_grad():  # layer 0's keys and values depend on the token and its position only
        fresh = model.backbone.base_model(tokens[None], position_ids=place, use_cache=True).cache.layers[0]
    attention = model.backbone.base_model.layers[0].self_attn
    H, Dh = attention.config.num_attention_heads, attention.head_dim
    groups = H // fresh.keys.shape[1]
    # a query that fits the block: the key of one of its tokens, as at the position blocks are scored from,
    # in every head of the group that reads it
    j = model.memory.score_position - SINKS
    query = fresh.keys[:, :, j : j + 1].repeat_interleave(groups, dim=1) * 4  # (1, H, 1, Dh)
    q = query[:, :, 0].reshape(1, fresh.keys.shape[1], groups, Dh)
    fit = Retrieving(model.memory, state.tensors, torch.ones(1, 1)).fit(0, q, stored // BLOCK)  # (1, blocks)
    assert int(fit.argmax()) == block
    keys, values = (
        state.tensors["keys"][0],
        state.tensors["values"][0],
    )  # the kept sinks + recent, (1, Hkv, 48, Dh)
    mask = torch.zeros(1, 1, 1, keys.shape[2])
    with torch.no_grad(), Retrieving(model.memory, state.tensors, torch.ones(1, 1)):
        ours, _ = sdpa_with_window_scores(attention, query, keys, values, mask, scaling=Dh**-0.5)
    both = (torch.cat([keys, fresh.keys], dim=2), torch.cat([values, fresh.values], dim=2))
    expected, _ = sdpa_attention_forward(attention, query, *both, torch.zeros(1, 1, 1, 64), scaling=Dh**-0.5)
    alone, _ = sdpa_attention_forward(attention, query, keys, values, mask, scaling=Dh**-0.5)
    assert (alone - expected).abs().max() > 1e-2  # the block changes the output
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_device_memory_stays_at_the_budget_while_the_store_grows():
    model = retrieval_model()
    with torch.no_grad():
        short, long = model.read([random_doc(300)]), model.read([random_doc(3000)])
    for name in ("keys", "values", "mask", "scores"):
        assert short.tensors[name].shape == long.tensors[name].shape
    assert long.tensors["host_len"].tolist() == [3000 - SINKS - RECENT]
    assert long.tensors["host_keys"].device.type == "cpu"


def test_a_document_reads_the_same_alone_and_in_a_batch():
    model = retrieval_model()
    docs = [random_doc(400, seed=1), random_doc(170, seed=2), random_doc(260, seed=3)]
    with torch.no_grad():
        batch = model.read(docs)
        alone = model.read([docs[1]])
        prompt = docs[1][None, -10:]
        ours = model.generate(prompt, memory=batch.select([1]), max_new_tokens=8, eos_token_id=-1)
        theirs = model.generate(prompt, memory=alone, max_new_tokens=8, eos_token_id=-1)
    n = int(alone.tensors["host_len"][0])
    assert n > BLOCK and int(batch.tensors["host_len"][1]) == n
    stored = batch.tensors["host_keys"][:, 1:2, :, :n]
    torch.testing.assert_close(stored, alone.tensors["host_keys"][:, :, :, :n], atol=1e-5, rtol=0)
    assert torch.equal(ours, theirs)


def test_state_save_load_generate_gives_identical_tokens(tmp_path):
    model = retrieval_model()
    doc = random_doc(500, seed=4)
    with torch.no_grad():
        state = model.read([doc])
        before = model.generate(doc[None, -12:], memory=state, max_new_tokens=10, eos_token_id=-1)
    state.save(tmp_path / "book.safetensors")
    loaded = MemoryState.load(tmp_path / "book.safetensors")
    with torch.no_grad():
        after = model.generate(doc[None, -12:], memory=loaded, max_new_tokens=10, eos_token_id=-1)
    assert torch.equal(before, after)
    other = retrieval_model(retrieval_block=8)  # another store layout
    with pytest.raises(ValueError, match="does not fit this model"):
        other.generate(doc[None, -12:], memory=loaded, max_new_tokens=2)


def test_reading_on_twice_from_one_state_keeps_both_continuations_apart():
    model = retrieval_model()
    doc = random_doc(600, seed=5)
    with torch.no_grad():
        state = model.read([doc[:400]])
        copy = state.select([0])  # its own buffers
        first = model.read([doc[400:]], memory=state)  # appends into the buffers it shares with `state`
        model.read([random_doc(200, seed=6)], memory=state)  # a second continuation of the same state
        expected = model.read([doc[400:]], memory=copy)
    n = int(expected.tensors["host_len"][0])
    assert n > int(state.tensors["host_len"][0])
    for name in ("host_keys", "host_values"):
        assert torch.equal(first.tensors[name][..., :n, :], expected.tensors[name][..., :n, :]), name


def test_retrieval_needs_a_budget_and_cache_positions():
    with pytest.raises(ValueError, match="needs a kv_budget"):
        tiny("llama", memory="retrieval", kv_budget=None)
    with pytest.raises(ValueError, match="must fit the backbone's"):
        tiny(
            "llama", memory="retrieval", kv_budget=1024, chunk_size=512, retrieval_block=128, retrieval_topk=8
        )


def test_generated_tokens_choose_their_blocks_every_n_tokens(monkeypatch):
    calls = []
    choose = Retrieving.choose

    def counted(self, layer, query, mask):
        calls.append((layer, query.shape[2]))
        return choose(self, layer, query, mask)

    monkeypatch.setattr(Retrieving, "choose", counted)  # the real choice, counted
    doc = random_doc(400, seed=7)
    outputs = {}
    for every in (1, 4):
        model = retrieval_model(retrieval_every=every)
        calls.clear()
        with torch.no_grad():
            state = model.read([doc])
            calls.clear()
            outputs[every] = model.generate(doc[None, -6:], memory=state, max_new_tokens=9, eos_token_id=-1)
        per_layer = [T for layer, T in calls if layer == 0]
        # the prompt chooses; then 8 generated tokens re-choose at every token, or at every 4th
        assert per_layer == [6] + [1] * (8 if every == 1 else 2)
    assert torch.equal(
        outputs[1][:, :7], outputs[4][:, :7]
    )  # the first new token: the prompt's choice in both
