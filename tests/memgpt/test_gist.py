import torch
from tiny import VOCAB, random_doc, tiny

from memgpt import MemGPT


def gist(**options) -> MemGPT:
    model = tiny("llama", memory="gist", chunk_size=16, num_slots=4, **options)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained adapter: its update is no longer zero
        for adapter in model.memory.adapters.values():
            adapter.up.normal_(std=0.5)
    return model


def test_the_state_is_n_entries_per_layer_whatever_the_length_and_depends_on_the_text():
    model = gist()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        a = model.read([torch.randint(2, VOCAB, (100,), generator=g)])
        b = model.read([torch.randint(2, VOCAB, (100,), generator=g)])
        long = model.read([torch.randint(2, VOCAB, (1000,), generator=g)])
    assert a.tensors["keys"].shape == long.tensors["keys"].shape == (2, 1, 2, 4, 16)  # (L, B, H, n, Dh)
    assert (a.tensors["values"] - b.tensors["values"]).abs().max() > 1e-4
    assert a.nbytes() == long.nbytes()


def test_gradients_reach_the_slots_the_prefix_and_the_write_adapter_through_a_later_chunk_only():
    model = gist().train()
    model.backbone.requires_grad_(False)
    before = {n: p.clone() for n, p in model.backbone.named_parameters()}
    g = torch.Generator().manual_seed(0)
    state = model.read([torch.randint(2, VOCAB, (32,), generator=g)])  # two writes
    last = torch.randint(2, VOCAB, (1, 16), generator=g)
    model(last, memory=state, labels=last).loss.backward()
    trained = dict(model.memory.named_parameters())
    assert {"write_embed", "prefix_keys", "prefix_values"} < set(trained) and len(model.memory.adapters) == 14
    for name, p in trained.items():
        if name.startswith("adapters.1_") and "k_proj" not in name and "v_proj" not in name:
            continue  # the last layer's keys and values are written; what it computes after them is not
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert all(torch.equal(p, before[n]) for n, p in model.backbone.named_parameters())


def test_the_write_adapter_changes_what_is_written_and_nothing_that_is_read():
    model = gist()
    doc, prompt = random_doc(40), random_doc(12)[None]
    with torch.no_grad():
        state = model.read([doc])
        adapted = model(prompt, memory=state).logits
        plain_state_logits = model.backbone(input_ids=prompt).logits
        for adapter in model.memory.adapters.values():
            adapter.up.zero_()
        assert torch.equal(model(prompt, memory=state).logits, adapted)  # the prompt is read unchanged
        # and outside a write the hooks change nothing
        assert torch.equal(model.backbone(input_ids=prompt).logits, plain_state_logits)
        assert (model.read([doc]).tensors["values"] - state.tensors["values"]).abs().max() > 1e-3


def test_saved_and_loaded_it_writes_and_answers_the_same(tmp_path):
    model = gist()
    model.save_pretrained(tmp_path / "m")
    loaded = MemGPT.from_pretrained(tmp_path / "m", device="cpu").eval()
    doc = random_doc(70)
    with torch.no_grad():
        a, b = model.read([doc]), loaded.read([doc])
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
        assert torch.equal(
            model.generate(doc[None], max_new_tokens=6), loaded.generate(doc[None], max_new_tokens=6)
        )


def test_without_an_adapter_only_the_slots_and_the_prefix_are_learned():
    model = tiny("llama", memory="gist", num_slots=4, memory_options={"write_rank": 0})
    assert {n for n, _ in model.memory.named_parameters()} == {"write_embed", "prefix_keys", "prefix_values"}


def test_a_document_writes_the_same_alone_or_beside_a_longer_one():
    model = gist()
    short, longer = random_doc(37, seed=1), random_doc(90, seed=2)
    with torch.no_grad():
        alone = model.read([short])
        both = model.read([short, longer])
    for name in ("keys", "values"):
        assert torch.allclose(alone.tensors[name][:, 0], both.tensors[name][:, 0], atol=1e-5)
    assert both.n_read.tolist() == [37, 90]
