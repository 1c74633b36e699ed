import pytest
import torch
from tiny import random_doc, tiny

MEMORIES = {
    "slots": {"memory": "slots"},
    "kv-unbounded": {"memory": "kv", "kv_budget": None},
    "kv-budget": {"memory": "kv", "kv_budget": 48, "kv_sinks": 4, "kv_recent": 16},
}


@pytest.mark.slow
@pytest.mark.parametrize("memory", list(MEMORIES))
def test_a_document_reads_and_generates_the_same_alone_or_in_a_batch(arch, memory):
    model = tiny(arch, **MEMORIES[memory])
    docs = [random_doc(n, seed=i) for i, n in enumerate([45, 130, 300])]
    prompts = [random_doc(n, seed=10 + i) for i, n in enumerate([3, 9, 5])]
    with torch.no_grad():
        batch = model.read(docs)
        ids = torch.zeros(3, 9, dtype=torch.long)  # left-padded prompts
        mask = torch.zeros(3, 9, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, -len(p) :], mask[i, -len(p) :] = p, 1
        together = model.generate(ids, attention_mask=mask, memory=batch, max_new_tokens=6, eos_token_id=-1)
        for i, doc in enumerate(docs):
            alone = model.read([doc])
            one = batch.select([i])
            width = alone.size()
            for name, tensor in alone.tensors.items():
                dim = 1 if name in ("keys", "values", "scores") else 0
                got = one.tensors[name]
                if name in ("keys", "values", "mask", "scores"):  # batch rows may carry extra padding
                    got = got.narrow(dim + (2 if name in ("keys", "values") else 1), 0, width)
                torch.testing.assert_close(got, tensor, atol=1e-4, rtol=1e-4, msg=f"{name} of doc {i}")
            gen = model.generate(prompts[i][None], memory=alone, max_new_tokens=6, eos_token_id=-1)
            assert torch.equal(together[i, -6:], gen[0, -6:]), f"doc {i}"


def test_finished_documents_keep_their_state_while_others_read():
    model = tiny("llama")
    short, long = random_doc(20), random_doc(200, seed=1)
    with torch.no_grad():
        batch = model.read([short, long])
        alone = model.read([short])
    torch.testing.assert_close(
        batch.select([0]).tensors["memory"], alone.tensors["memory"], atol=1e-5, rtol=0
    )
    assert batch.n_read.tolist() == [20, 200]
