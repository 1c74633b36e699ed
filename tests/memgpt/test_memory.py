import pytest
import torch
from null_memory import NullMemory

import memgpt
from memgpt import MemGPT, MemGPTConfig, MemoryState

TINY = {
    **memgpt.config.default_backbone(),
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
}


def null_model(**options) -> MemGPT:
    torch.manual_seed(0)
    return MemGPT(MemGPTConfig(backbone=TINY, memory="null", chunk_size=8, **options), device="cpu")


def test_a_memory_registered_in_its_own_module_reads_and_generates():
    model = null_model(memory_options={"label": "x"})
    assert isinstance(model.memory, NullMemory)
    assert "null" in memgpt.memory_names()
    state = model.read([torch.arange(20) + 5])
    assert state.n_read.tolist() == [20] and state.size() == 0
    prompt = torch.arange(12)[None] + 5
    out = model.generate(prompt, memory=state, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 16)
    # the null memory keeps nothing: the same prompt after another document gives the same tokens
    other = model.read([torch.arange(30) + 40])
    again = model.generate(prompt, memory=other, max_new_tokens=4, do_sample=False)
    assert torch.equal(out, again)


def test_its_own_options_are_checked_and_reach_the_signature():
    assert null_model(memory_options={"label": "x"}).signature()["label"] == "x"
    with pytest.raises(ValueError, match="memory_options do not fit memory='null'"):
        null_model(memory_options={"colour": "red"})
    with pytest.raises(ValueError, match="takes no memory_options"):
        MemGPTConfig(memory="kv", memory_options={"label": "x"})


def test_an_unknown_memory_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"memory must be one of \(.*'kv'.*\), got 'nope'"):
        MemGPTConfig(memory="nope")


def test_a_saved_state_of_an_unknown_memory_is_refused_in_one_line(tmp_path):
    state = null_model().read([torch.arange(9) + 5])
    path = tmp_path / "state.safetensors"
    MemoryState("unregistered", state.tensors, state.signature).save(path)
    with pytest.raises(ValueError, match="holds a 'unregistered' memory state, a memory unknown here"):
        MemoryState.load(path)


def test_a_name_is_registered_once():
    kind = memgpt.memory_kind("kv")
    with pytest.raises(ValueError, match="already registered"):
        memgpt.register_memory(memgpt.MemoryKind("kv", lambda config, backbone, tokenizer: None))
    assert memgpt.memory_kind("kv") is kind
