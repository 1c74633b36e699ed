"""Shared fixtures for the pipeline tests: the default tokenizer and the shared corpus."""

from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
CORPUS = REPO / ".." / "shared" / "corpus"


def load_default_tokenizer():
    """The project's default tokenizer (memgpt.load_tokenizer once it exists)."""
    try:
        from memgpt import load_tokenizer
    except ImportError:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(REPO / "memgpt" / "assets"))
    return load_tokenizer()


@pytest.fixture(scope="session")
def tokenizer():
    return load_default_tokenizer()


@pytest.fixture(scope="session")
def book() -> str:
    path = CORPUS / "moby_dick.txt"
    if not path.exists():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return path.read_text(encoding="utf-8")
