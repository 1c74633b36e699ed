"""Fixtures for the job tests: a small corpus, a tiny random model, the shared local Ray session."""

import sys
from pathlib import Path

import pytest

sys.path.insert(
    0, str(Path(__file__).parents[1] / "pipeline")
)  # the tiny-model helpers live with the pipeline tests
from pipeline_support import corpus_file, random_model  # noqa: E402


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    plays = corpus_file("shakespeare.txt").read_text(encoding="utf-8")
    for i in range(5):
        (root / f"play{i}.txt").write_text(plays[i * 30_000 : i * 30_000 + 1_500 + 500 * i])
    (root / "empty.txt").write_text("")
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("model") / "tiny", chunk_size=64)
