"""Fixtures for the pipeline tests: tokenizer, corpus, one Ray session, and tiny real models."""

from pathlib import Path

import pytest
from pipeline_support import corpus_file, train_fact_model

from memgpt import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def book() -> str:
    return corpus_file("moby_dick.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def fact_model(tmp_path_factory) -> Path:
    text = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")[:300_000]
    return train_fact_model(tmp_path_factory.mktemp("fact_model"), text)
