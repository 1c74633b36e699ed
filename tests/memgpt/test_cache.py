import torch

from memgpt.cache import ReservedLayer, reserved_cache


def updates(seed: int = 0, sizes=(5, 1, 1, 3, 1, 1, 1, 1, 1, 7, 1)):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 3, t, 4, generator=g), torch.randn(2, 3, t, 5, generator=g)) for t in sizes]


def test_updates_return_what_concatenation_would():
    g = torch.Generator().manual_seed(1)
    keys, values = torch.randn(2, 3, 6, 4, generator=g), torch.randn(2, 3, 6, 5, generator=g)
    for layer in (ReservedLayer(room=2, keys=keys, values=values), ReservedLayer()):
        expected_k = keys if layer.is_initialized else keys[..., :0, :]
        expected_v = values if layer.is_initialized else values[..., :0, :]
        for k, v in updates():
            expected_k, expected_v = torch.cat([expected_k, k], -2), torch.cat([expected_v, v], -2)
            got_k, got_v = layer.update(k, v)
            assert torch.equal(got_k, expected_k) and torch.equal(got_v, expected_v)
            assert layer.get_seq_length() == expected_k.shape[-2]


def test_generating_token_by_token_reallocates_a_logarithmic_number_of_times():
    layer = ReservedLayer(room=0, keys=torch.zeros(1, 2, 100, 8), values=torch.zeros(1, 2, 100, 8))
    buffers = []  # kept alive, so a reallocation cannot reuse an address and go unnoticed
    for _ in range(1000):
        layer.update(torch.ones(1, 2, 1, 8), torch.ones(1, 2, 1, 8))
        if not buffers or layer._keys is not buffers[-1]:
            buffers.append(layer._keys)
    assert layer.keys.shape[-2] == 1100 and bool((layer.keys[:, :, 100:] == 1).all())
    assert len(buffers) == 4  # 100 -> 201 -> 403 -> 807 -> 1615 entries: four buffers, not a thousand


def test_dynamic_layer_methods_that_replace_the_tensors_keep_working():
    layer = ReservedLayer(room=8, keys=torch.randn(3, 2, 4, 8), values=torch.randn(3, 2, 4, 8))
    layer.batch_select_indices(torch.tensor([2, 0]))
    kept, buffer = layer.keys.clone(), layer._keys
    k = torch.randn(2, 2, 1, 8)
    got, _ = layer.update(k, k)
    assert torch.equal(got, torch.cat([kept, k], -2))
    assert layer._keys is buffer  # the rows were selected with their room: the update did not reallocate
    layer.crop(-2)
    got, _ = layer.update(k, k)
    assert got.shape[-2] == 4 and torch.equal(got[:, :, -1:], k)


def test_reserved_cache_fills_its_layers_lazily_like_a_dynamic_cache():
    cache = reserved_cache()
    k, v = updates(sizes=(4,))[0]
    cache.update(k, v, layer_idx=0)
    cache.update(k, v, layer_idx=1)
    assert [type(layer) for layer in cache.layers] == [ReservedLayer, ReservedLayer]
    assert cache.get_seq_length(1) == 4


def test_tensors_returned_earlier_are_never_overwritten():
    layer = ReservedLayer(room=16, keys=torch.zeros(1, 1, 4, 2), values=torch.zeros(1, 1, 4, 2))
    first, _ = layer.update(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    before = first.clone()
    layer.crop(-2)  # drop the two entries just added, then write two others where they were
    layer.update(torch.full((1, 1, 2, 2), 7.0), torch.full((1, 1, 2, 2), 7.0))
    assert torch.equal(first, before)


def test_under_autograd_it_concatenates_and_backward_works():
    layer = ReservedLayer(room=8, keys=torch.zeros(1, 1, 2, 2), values=torch.zeros(1, 1, 2, 2))
    x = torch.ones(1, 1, 1, 2, requires_grad=True)
    total = 0
    for _ in range(3):
        k, v = layer.update(x * 2, x * 3)
        total = total + k.sum() + v.sum()
    total.backward()
    assert x.grad is not None and torch.equal(x.grad, torch.full_like(x, (1 + 2 + 3) * 5.0))
