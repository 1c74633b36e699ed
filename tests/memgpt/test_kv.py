import pytest
import torch
from tiny import TINY_BACKBONES, random_doc, tiny

from memgpt import MemGPT, MemGPTConfig
from memgpt.kv import SCORE_WINDOW, scoring_entries


def chunked_logits(model, doc: torch.Tensor, chunk: int) -> torch.Tensor:
    state, parts = model.init_state(1), []
    for i in range(0, len(doc), chunk):
        out = model(doc[None, i : i + chunk], memory=state)
        state, parts = out.memory, parts + [out.logits]
    return torch.cat(parts, dim=1)


def test_unlimited_budget_is_exactly_one_forward_pass(arch):
    model = tiny(arch, memory="kv", kv_budget=None)
    doc = random_doc(200)
    with torch.no_grad():
        full = model.backbone(doc[None]).logits
        chunked = chunked_logits(model, doc, model.config.chunk_size)
    torch.testing.assert_close(chunked, full, atol=1e-4, rtol=0)


def test_unlimited_budget_greedy_generate_matches_backbone(arch):
    model = tiny(arch, memory="kv", kv_budget=None)
    doc = random_doc(150, seed=3)
    ours = model.generate(doc[None], max_new_tokens=12, eos_token_id=0, pad_token_id=0)
    theirs = model.backbone.generate(
        doc[None], max_new_tokens=12, do_sample=False, eos_token_id=0, pad_token_id=0
    )
    assert torch.equal(ours, theirs)


def test_small_budget_changes_logits_but_not_size(arch):
    model = tiny(arch, memory="kv", kv_budget=48, kv_sinks=4, kv_recent=16)
    doc = random_doc(200, seed=1)
    with torch.no_grad():
        full = model.backbone(doc[None]).logits
        chunked = chunked_logits(model, doc, model.config.chunk_size)
    assert (chunked - full).abs().max() > 1e-3  # entries were really dropped


@pytest.mark.slow
def test_budget_bounds_memory_whatever_the_length():
    model = tiny("llama", memory="kv", kv_budget=64, kv_sinks=4, kv_recent=16)
    with torch.no_grad():
        short = model.read([random_doc(300)])
        long = model.read([random_doc(3000)])
    assert short.size() == long.size() == 64
    assert short.nbytes() == long.nbytes()
    assert long.n_read.tolist() == [3000]
    assert bool(long.tensors["mask"].all())


def test_eviction_keeps_sinks_and_recent_entries():
    model = tiny("llama", memory="kv", kv_budget=24, kv_sinks=4, kv_recent=8, chunk_size=16)
    doc = random_doc(16 * 6)
    with torch.no_grad():
        state = model.read([doc])
        # what the backbone itself computes for the first 4 tokens and the last 8 tokens
        cache = model.backbone(doc[None], use_cache=True).cache
    keys = state.tensors["keys"]  # (L, 1, H, 24, Dh)
    for layer in range(keys.shape[0]):  # the sinks were computed before anything was dropped
        torch.testing.assert_close(
            keys[layer, 0, :, :4], cache.layers[layer].keys[0, :, :4], atol=1e-4, rtol=0
        )
    # layer 0's keys depend on the token and its position only, so the recent window is recognisable there,
    # moved to the last 8 places of the cache
    with torch.no_grad():
        moved = model.backbone.base_model(
            doc[None, -8:], position_ids=torch.arange(16, 24)[None], use_cache=True
        )
    torch.testing.assert_close(keys[0, 0, :, -8:], moved.cache.layers[0].keys[0], atol=1e-5, rtol=0)


def test_window_scores_are_the_eager_attention_weights_of_the_last_queries(arch):
    model = tiny(arch, memory="kv", kv_budget=48, kv_sinks=4, kv_recent=16)
    doc = random_doc(70, seed=5)[None]
    with torch.no_grad(), scoring_entries():
        ours = model.backbone.base_model(doc, output_attentions=True).attentions
        model.backbone.set_attn_implementation("eager")
        eager = model.backbone.base_model(doc, output_attentions=True).attentions
    assert len(ours) == len(eager) == model.backbone.config.num_hidden_layers
    for window, full in zip(ours, eager, strict=True):
        assert window.shape[2] == SCORE_WINDOW < full.shape[2]
        torch.testing.assert_close(window, full[:, :, -SCORE_WINDOW:], atol=1e-5, rtol=0)


def test_generating_computes_no_attention_weights():
    model = tiny("llama", memory="kv", kv_budget=48, kv_sinks=4, kv_recent=16)
    doc = random_doc(40, seed=6)[None]
    with torch.no_grad():
        assert not model.backbone.base_model(doc, output_attentions=True).attentions  # none recorded
        with scoring_entries():
            assert len(model.backbone.base_model(doc, output_attentions=True).attentions) == 2


def test_gradients_flow_through_the_entries_kept_after_eviction():
    model = tiny("llama", memory="kv", kv_budget=24, kv_sinks=4, kv_recent=8, chunk_size=16).train()
    doc = random_doc(64, seed=7)
    state = model.init_state(1)
    for i in range(0, 48, 16):  # 48 entries read, 24 kept: two evictions
        state = model.step(state, doc[None, i : i + 16])
    model(doc[None, 48:], memory=state, labels=doc[None, 48:]).loss.backward()
    grad = model.backbone.get_input_embeddings().weight.grad
    sinks = [t for t in doc[:4].tolist() if t not in doc[48:].tolist()]  # reach the loss only via memory
    assert sinks and bool((grad[sinks].abs().sum(-1) > 0).all())


ROPE_TYPES = {  # every rope type whose angle grows linearly with the position
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "yarn": {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}
WINDOW = 256


def small_window(arch: str, rope: str = "default", **options):
    """A tiny RoPE MemGPT whose backbone knows only WINDOW positions."""
    backbone = dict(TINY_BACKBONES[arch], max_position_embeddings=WINDOW)
    backbone["rope_parameters"] = dict(
        ROPE_TYPES[rope], **({"partial_rotary_factor": 0.25} if arch == "gpt_neox" else {})
    )
    torch.manual_seed(0)
    options = {"memory": "kv", "chunk_size": 64, "kv_budget": 96, "kv_sinks": 4, **options}
    config = MemGPTConfig(backbone=backbone, **options)
    return MemGPT(config, device="cpu", dtype=torch.float32).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_positions_stay_inside_the_window_over_ten_times_its_length(arch):
    model = small_window(arch, kv_recent=32)
    seen = []
    model.backbone.base_model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(int(kwargs["position_ids"].max())), with_kwargs=True
    )
    doc = random_doc(10 * WINDOW, seed=8)
    with torch.no_grad():
        state = model.read([doc])
        model.generate(doc[None, -40:], memory=state, max_new_tokens=20, eos_token_id=-1)
    assert len(seen) >= 40 + 20 and max(seen) < WINDOW  # 40 chunks read, then the prompt and 19 tokens
    assert state.n_read.tolist() == [10 * WINDOW]


@pytest.mark.parametrize(
    "arch, rope", [("llama", r) for r in ROPE_TYPES] + [("qwen2", "default"), ("gpt_neox", "default")]
)
def test_a_re_rotated_key_equals_the_key_computed_at_its_new_position(arch, rope):
    model = small_window(arch, rope, kv_recent=32)
    doc = random_doc(60, seed=9)[None]
    with torch.no_grad():  # shifting every position by the same amount changes no hidden state in RoPE models
        before = model.backbone.base_model(
            doc, position_ids=torch.arange(150, 210)[None], use_cache=True
        ).cache
        after = model.backbone.base_model(doc, position_ids=torch.arange(7, 67)[None], use_cache=True).cache
    keys = torch.stack([layer.keys for layer in before.layers])  # (L, 1, H, 60, Dh)
    moved = model.memory.rotation(keys, torch.full((keys.shape[0], 1, 60), -143))
    expected = torch.stack([layer.keys for layer in after.layers])
    assert (keys - expected).abs().max() > 0.1  # the move matters
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_kept_keys_sit_at_their_place_in_the_cache(arch):
    # sinks + recent fill the budget: the kept tokens are known, and layer 0's keys depend on token and position
    model = small_window(arch, kv_recent=92)
    doc = random_doc(10 * WINDOW, seed=10)
    with torch.no_grad():
        state = model.read([doc])
        kept = torch.cat([doc[:4], doc[-92:]])[None]
        expected = model.backbone.base_model(kept, use_cache=True).cache.layers[0].keys  # positions 0..95
    torch.testing.assert_close(state.tensors["keys"][0], expected, atol=1e-5, rtol=0)


def test_a_budget_that_overflows_the_window_is_refused():
    with pytest.raises(ValueError, match="256-position window"):
        small_window("llama", kv_budget=224, kv_recent=32)
