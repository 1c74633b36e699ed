"""The default model: SmolLM2 (it knows English) for real text, memgpt-small only when named; the run says which."""

import pandas as pd
import pytest

from benchmarks.knowledge import is_grounded
from benchmarks.planted_text import CORPUS, planted_corpus
from jobs import extract
from memgpt import DEFAULT_MODEL
from memgpt.names import STORY_MODEL, TEXT_MODEL
from memgpt.offline import ensure_smollm2
from pipeline.actor import model_name, model_options, model_path, model_reason
from pipeline.config import ExtractConfig


def test_the_rule():
    default = ExtractConfig(input="-", output="-")
    assert model_path(default) == str(ensure_smollm2(progress=None)) and model_name(default) == TEXT_MODEL
    assert model_options(default) == {"memory": "kv", "chunk_size": 512, "kv_budget": 1024}
    assert model_options(ExtractConfig(input="-", output="-", chunk_size=256)) == {
        "memory": "kv", "chunk_size": 256, "kv_budget": 1024}  # fmt: skip
    assert "default for text" in model_reason(default)
    story = ExtractConfig(input="-", output="-", model=STORY_MODEL)
    assert model_path(story) == str(DEFAULT_MODEL) and model_options(story) == {}
    assert "synthetic stories" in model_reason(story)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, ray_session):
    """`jobs.extract` without --model on an excerpt of a real book with planted facts."""
    if not (CORPUS / "pride_and_prejudice.txt").is_file():
        pytest.skip(f"the book text is read from {CORPUS}")
    root = tmp_path_factory.mktemp("default")
    (root / "corpus").mkdir()
    doc = planted_corpus(1, 4000, 2, seed=3)[0]
    (root / "corpus" / "book.txt").write_text(doc.text, encoding="utf-8")
    return root, doc


@pytest.mark.slow
def test_without_model_real_text_gets_parsed_grounded_facts_and_a_report_naming_the_model(
    default_run, capsys
):
    root, doc = default_run
    assert extract.main(["--input", str(root / "corpus"), "--output", str(root / "out")]) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[0].startswith(
        f"model {TEXT_MODEL} (memory kv, chunk_size 512, kv_budget 1024): the default"
    )
    summaries = pd.read_parquet(root / "out" / "summaries")
    facts = pd.read_parquet(root / "out" / "facts")
    assert summaries["model"].tolist() == [TEXT_MODEL] and summaries["summary"].str.len().min() > 0
    assert len(facts) >= 3 and summaries["n_unparsed"].sum() == 0  # every line parses
    grounded = [is_grounded(row, doc.text) for row in facts.itertuples()]
    assert sum(grounded) / len(grounded) >= 0.95
