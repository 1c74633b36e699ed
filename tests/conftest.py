"""Fixtures for every test folder: a real pretrained model (SmolLM2-135M-Instruct), made ready and loaded once."""

from pathlib import Path

import pytest
import torch

from memgpt import MemGPT
from memgpt.offline import ensure_smollm2


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """Its HF model folder in the default cache: converted once per machine (from the registry), then instant."""
    return ensure_smollm2()


@pytest.fixture(scope="session")
def smollm2(smollm2_path) -> MemGPT:
    """The model with a kv memory that keeps everything (exact), fp32 on CPU; tests must not change it."""
    model = MemGPT.from_pretrained(
        smollm2_path, memory="kv", kv_budget=None, device="cpu", dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test run (starting Ray costs seconds); logical CPUs > cores is fine here."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
