import pytest
import torch
from tiny import random_doc

from memgpt import MemGPT, MemGPTConfig

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("memory", ["slots", "kv"])
def test_on_cuda_the_default_is_bf16_and_reads_and_generates(memory):
    model = MemGPT(MemGPTConfig(memory=memory))
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    with torch.inference_mode():
        state = model.read([random_doc(1000), random_doc(300, seed=1)])
        out = model.generate(random_doc(5)[None].expand(2, -1), memory=state, max_new_tokens=4)
    assert state.tensors["n_read"].tolist() == [1000, 300]
    assert out.shape[0] == 2 and out.device.type == "cuda"


@needs_cuda
def test_cuda_memory_stays_flat_with_length():
    model = MemGPT(MemGPTConfig(memory="kv", kv_budget=256, kv_recent=64))
    peaks = []
    for n in (2_000, 20_000):
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model.read([random_doc(n)])
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] <= 1.1 * peaks[0]


def test_without_cuda_the_model_is_fp32_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model = MemGPT()
    assert model.device.type == "cpu" and model.dtype == torch.float32
