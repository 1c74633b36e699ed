import torch
from tiny import VOCAB, tiny


def test_gradients_reach_memory_weights_and_the_first_chunk_through_three_chunks():
    model = tiny("llama", chunk_size=16, bptt_depth=4).train()
    g = torch.Generator().manual_seed(0)
    first = torch.randint(100, 200, (16,), generator=g)  # tokens that appear only in chunk 1
    rest = torch.randint(1000, VOCAB, (32,), generator=g)
    state = model.read([torch.cat([first, rest])])  # chunks 1..3: three memory updates in the graph
    last = torch.randint(1000, VOCAB, (1, 16), generator=g)
    out = model(last, memory=state, labels=last)
    out.loss.backward()
    for name, p in model.memory.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    emb_grad = model.backbone.get_input_embeddings().weight.grad
    assert emb_grad[first].abs().sum(-1).gt(0).all()  # chunk 1's inputs shape the last chunk's loss


def test_truncated_bptt_stops_gradients_beyond_its_depth():
    model = tiny("llama", chunk_size=16, bptt_depth=2).train()
    g = torch.Generator().manual_seed(0)
    first = torch.randint(100, 200, (16,), generator=g)
    rest = torch.randint(1000, VOCAB, (32,), generator=g)
    state = model.read([torch.cat([first, rest])])  # detached after chunk 2
    last = torch.randint(1000, VOCAB, (1, 16), generator=g)
    model(last, memory=state, labels=last).loss.backward()
    assert model.backbone.get_input_embeddings().weight.grad[first].abs().sum() == 0


def test_state_depends_on_input_and_not_its_size_on_length():
    model = tiny("llama")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        a = model.read([torch.randint(2, VOCAB, (100,), generator=g)])
        b = model.read([torch.randint(2, VOCAB, (100,), generator=g)])
        long = model.read([torch.randint(2, VOCAB, (1000,), generator=g)])
    assert (a.tensors["memory"] - b.tensors["memory"]).abs().max() > 1e-4
    assert a.tensors["memory"].shape == long.tensors["memory"].shape == (1, 16, 64)
    assert a.nbytes() == long.nbytes()


def test_generation_reads_the_memory():
    model = tiny("llama")
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(2, VOCAB, (1, 8), generator=g)
    with torch.no_grad():
        a = model.read([torch.randint(2, VOCAB, (100,), generator=g)])
        b = model.read([torch.randint(2, VOCAB, (100,), generator=g)])
        la = model(prompt, memory=a).logits
        lb = model(prompt, memory=b).logits
    assert (la - lb).abs().max() > 1e-4
