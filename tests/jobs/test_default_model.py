"""The default model: SmolLM2 (it knows English) for real text, memgpt-small only when named; the run says which."""

import contextlib
import io

import pandas as pd
import pytest

from benchmarks.knowledge import is_grounded
from benchmarks.planted_text import CORPUS, planted_corpus
from jobs import ask, extract
from memgpt import DEFAULT_MODEL
from memgpt.names import STORY_MODEL, TEXT_MODEL
from memgpt.offline import ensure_smollm2
from pipeline.actor import model_name, model_options, model_path, model_reason
from pipeline.config import ExtractConfig
from pipeline.grammar import names_in
from pipeline.summary import supported


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
    """`jobs.extract` without --model (states kept) on an excerpt of a real book with planted facts: Judge
    Ferreira keeps the violin in the library of Uppsala, and six sentences later "he" moves it to Arles."""
    if not (CORPUS / "pride_and_prejudice.txt").is_file():
        pytest.skip(f"the book text is read from {CORPUS}")
    root = tmp_path_factory.mktemp("default")
    (root / "corpus").mkdir()
    doc = planted_corpus(1, 4000, 2, seed=3)[0]
    assert doc.facts[1].final_place == "the chapel of Arles" and doc.facts[1].follow_up_start is not None
    (root / "corpus" / "book.txt").write_text(doc.text, encoding="utf-8")
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        code = extract.main(["--input", str(root / "corpus"), "--output", str(root / "out"), "--save-states"])
    assert code == 0
    return root, doc, report.getvalue().splitlines()


@pytest.mark.slow
def test_without_model_real_text_gets_parsed_grounded_facts_and_a_report_naming_the_model(default_run):
    root, doc, report = default_run
    assert report[0].startswith(
        f"model {TEXT_MODEL} (memory kv, chunk_size 512, kv_budget 1024): the default"
    )
    summaries = pd.read_parquet(root / "out" / "summaries")
    facts = pd.read_parquet(root / "out" / "facts")
    assert summaries["model"].tolist() == [TEXT_MODEL] and summaries["summary"].str.len().min() > 0
    assert len(facts) >= 3 and summaries["n_unparsed"].sum() == 0  # every line parses
    grounded = [is_grounded(row, doc.text) for row in facts.itertuples()]
    assert sum(grounded) / len(grounded) >= 0.95
    # the summary comes from the entity states and facts: every sentence's evidence points into the text and
    # holds the words it says, and it names only names the text has
    (row,) = summaries.itertuples()
    assert row.summary_from == "states" and row.summary.startswith("The text follows ")
    assert all(0 <= e["char_start"] < e["char_end"] <= len(doc.text) for e in row.summary_evidence)
    assert all(supported(row.summary, row.summary_evidence, doc.text))
    assert all(name in doc.text for name in names_in(row.summary))


@pytest.mark.slow
def test_a_question_naming_a_person_gets_its_latest_fact_from_the_saved_state(default_run):
    """The follow-up's "he" was resolved to the judge by the entity states; asked where the judge keeps the
    violin, the answer comes with the latest fact of the judge about a violin, not the first place."""
    root, _, _ = default_run
    state = root / "out" / "states" / "book.txt.safetensors"
    model, loaded, info = ask.load(state, None)
    assert "Judge Ferreira moved the violin to the chapel of Arles." in info["people"]["Judge Ferreira"]
    question = "Where does Judge Ferreira keep the violin?"
    prompt = ask.with_people(question, info["people"])
    assert prompt.startswith(question) and prompt.endswith(
        "Judge Ferreira moved the violin to the chapel of Arles."
    )
    answer = ask.ask(model, loaded, question, 32, out=io.StringIO(), people=info["people"])
    assert "Arles" in answer
