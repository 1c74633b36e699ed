"""The model actor, called in-process on tiny real models (the Ray runs are in test_run.py)."""

import dataclasses

import pyarrow as pa
import pytest
import torch
from pipeline_support import CHUNK_SIZE, FACT_LINE, SUMMARY, corpus_file, random_model

from pipeline.actor import Extractor, load_model
from pipeline.chunking import chunk_text
from pipeline.config import ExtractConfig
from pipeline.schemas import RESULTS


def config(model, **kw) -> ExtractConfig:
    kw = dict(max_new_tokens_facts=12, max_new_tokens_summary=10, checkpoint_every=0) | kw  # no output here
    return ExtractConfig(input="unused", output="unused", model=str(model), **kw)


def doc(doc_id: str, text, group: int = 0) -> dict:
    return {
        "doc_id": doc_id,
        "source": f"{doc_id}.txt",
        "title": doc_id,
        "text": text,
        "group": group,
        "attempt": 1,
    }


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    book = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")
    start = book.index("It is a truth universally acknowledged")
    return {
        "short": "Elizabeth went to the house. She liked it.",
        "mid": book[start : start + 6000],
        "long": book[start + 6000 : start + 30000],
    }


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    threads = torch.get_num_threads()  # an Extractor fixes torch's threads for its (actor) process
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def extractor(fact_model) -> Extractor:
    return Extractor(config(fact_model), run_id="r1")


def results(extractor, docs) -> dict[str, dict]:
    table = extractor(pa.Table.from_pylist(docs))
    assert table.schema.equals(RESULTS)
    return {r["doc_id"]: r for r in table.to_pylist()}


@pytest.mark.slow
def test_reads_a_group_in_lockstep_and_accounts_for_it(extractor, texts, tokenizer):
    out = results(extractor, [doc(k, v) for k, v in texts.items()])
    fact_tokens = len(tokenizer(FACT_LINE, add_special_tokens=False)["input_ids"])
    summary_tokens = len(tokenizer(SUMMARY, add_special_tokens=False)["input_ids"])
    assert extractor.shared and extractor.text_chunk == CHUNK_SIZE  # the facts prompt takes no room in a chunk
    for doc_id, text in texts.items():
        (s,) = out[doc_id]["summaries"]
        chunks = chunk_text(text, tokenizer, extractor.text_chunk)
        assert s["summary"] == SUMMARY
        assert (s["n_chars"], s["n_chunks"]) == (len(text), len(chunks))
        assert s["n_tokens"] == sum(len(c.token_ids) for c in chunks)
        assert s["tokens_generated"] == len(chunks) * fact_tokens + summary_tokens  # EOS not counted
        assert (s["n_facts"], s["n_unparsed"]) == (1, 0)  # the same line from every chunk, de-duplicated
        assert s["memory_kind"] == "slots" and s["memory_size"] == 2 and s["device"] == "cpu"
        assert s["seconds"] > 0 and s["run_id"] == "r1"
        (m,) = out[doc_id]["manifest"]
        assert (m["status"], m["attempts"], m["n_tokens"]) == ("ok", 1, s["n_tokens"])
        assert out[doc_id]["errors"] == []
    assert len(texts["long"]) > 20_000 and out["long"]["summaries"][0]["n_chunks"] > 20


def test_facts_carry_evidence_inside_their_chunk(extractor, texts, tokenizer):
    out = results(extractor, [doc("short", texts["short"]), doc("mid", texts["mid"])])
    (fact,) = out["short"]["facts"]
    assert (fact["subject"], fact["relation"], fact["object"]) == ("Elizabeth", "visits", "the house")
    assert fact["chunk_index"] == 0 and fact["score"] == 1.0
    assert texts["short"][fact["char_start"] : fact["char_end"]] == "Elizabeth went to the house"
    (fact,) = out["mid"]["facts"]
    chunk = chunk_text(texts["mid"], tokenizer, extractor.text_chunk)[fact["chunk_index"]]
    assert chunk.char_start <= fact["char_start"] < fact["char_end"] <= chunk.char_end


def test_a_failing_document_becomes_an_error_row_and_the_others_finish(extractor, texts):
    out = results(extractor, [doc("good", texts["short"]), doc("bad", None), doc("good2", texts["mid"])])
    assert out["good"]["manifest"][0]["status"] == out["good2"]["manifest"][0]["status"] == "ok"
    bad = out["bad"]
    assert bad["summaries"] == [] and bad["facts"] == []
    (error,) = bad["errors"]
    assert (error["doc_id"], error["stage"], error["source"]) == ("bad", "extract", "bad.txt")
    assert "bad.txt" in error["message"] and error["error_type"]
    assert bad["manifest"][0]["status"] == "error" and bad["manifest"][0]["error"] == error["message"]


def test_groups_in_one_batch_are_read_separately(extractor, texts):
    together = results(extractor, [doc("a", texts["short"], group=0), doc("b", texts["mid"], group=1)])
    alone = results(extractor, [doc("b", texts["mid"], group=7)])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(together["b"]["summaries"]) == strip(alone["b"]["summaries"])
    assert together["b"]["facts"] == alone["b"]["facts"]


def test_lookup_decoding_changes_no_row(fact_model, extractor, texts):
    stepwise = Extractor(config(fact_model, facts_draft_tokens=0), run_id="r1")  # one token per pass
    assert extractor.lookup and not stepwise.lookup
    docs = [doc("short", texts["short"]), doc("mid", texts["mid"])]
    drafted, step = results(extractor, docs), results(stepwise, docs)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    for d in ("short", "mid"):
        assert drafted[d]["facts"] == step[d]["facts"] and drafted[d]["facts"]
        assert strip(drafted[d]["summaries"]) == strip(step[d]["summaries"])


@pytest.mark.parametrize("memory", ["slots", "kv"])
def test_random_models_run_both_memories(tmp_path, texts, memory):
    ex = Extractor(
        config(random_model(tmp_path / "m"), memory=memory, max_new_tokens_facts=4, max_new_tokens_summary=4),
        run_id="r",
    )
    out = results(ex, [doc("a", texts["short"]), doc("b", texts["mid"])])
    for r in out.values():
        (s,) = r["summaries"]
        assert s["memory_kind"] == memory and r["manifest"][0]["status"] == "ok"
        assert s["tokens_generated"] <= 4 * (s["n_chunks"] + 1)


def test_too_small_a_chunk_for_the_prompt_is_refused(tmp_path):
    model = random_model(tmp_path / "m", chunk_size=12)
    with pytest.raises(ValueError, match="chunk_size"):
        Extractor(config(model, facts_pass="separate"), run_id="r")
    assert Extractor(config(model), run_id="r").text_chunk == 12  # shared: the prompt is not in the chunk


@pytest.mark.parametrize("memory", ["slots", "kv"])
def test_the_shared_pass_reads_each_chunk_once(tmp_path, texts, memory):
    """facts_pass shared: the backbone reads each text token once (the memory's read), plus the short prompts
    and what it writes; separate: each chunk twice, in the facts prompt and in the memory's read."""
    model = random_model(tmp_path / "m", memory=memory)
    read, n_tokens = {}, {}
    for facts_pass in ("shared", "separate"):
        ex = Extractor(config(model, facts_pass=facts_pass, max_new_tokens_facts=4), run_id="r")

        def count(module, args, kwargs, facts_pass=facts_pass):  # positions a backbone call reads, padding too
            x = kwargs["input_ids"] if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
            read[facts_pass] = read.get(facts_pass, 0) + x.shape[0] * x.shape[1]

        ex.model.backbone.base_model.register_forward_pre_hook(count, with_kwargs=True)
        (out,) = results(ex, [doc("mid", texts["mid"])]).values()
        (s,) = out["summaries"]
        assert s["tokens_generated"] > 0
        n_tokens[facts_pass] = s["n_tokens"]
    assert read["shared"] < 1.5 * n_tokens["shared"]
    assert read["separate"] >= 2 * n_tokens["separate"]


def test_the_seed_fixes_random_init_weights():
    base = ExtractConfig(input="unused", output="unused", model="random", chunk_size=32)
    a, b = load_model(base, "cpu"), load_model(base, "cpu")
    c = load_model(dataclasses.replace(base, seed=1), "cpu")
    state = lambda m: m.state_dict().items()  # noqa: E731
    assert all(torch.equal(x, b.state_dict()[k]) for k, x in state(a))  # every actor holds the same model
    assert not all(torch.equal(x, c.state_dict()[k]) for k, x in state(a))


@pytest.mark.slow
def test_auto_summaries_from_states_for_a_story_and_the_lead_for_a_text_without_people(smollm2_path):
    """One lockstep group, two kinds of document: the story's summary is read off its facts, with evidence in
    its text; the manual's (one name, no people) is its opening sentences, not generated."""
    story = (
        "Mary Hale walked to the mill on Monday. Tom Reed sold the grey horse to a farmer. Mary Hale kept the "
        "brass key in her desk. Tom Reed rode home in the rain. Later, Mary Hale moved the brass key to the "
        "chapel. Tom Reed slept."
    )
    manual = (
        "Install the package with pip. Run the command with a folder of text files. The tables are written "
        "as Parquet files. Linux is supported. Each table has a schema."
    )
    settings = dict(max_new_tokens_facts=96, max_new_tokens_summary=24, checkpoint_every=0, chunk_size=256)
    extractor = Extractor(
        ExtractConfig(input="unused", output="unused", model=str(smollm2_path), **settings), "r"
    )
    out = results(extractor, [doc("story", story), doc("manual", manual)])
    (mine,), (theirs,) = out["story"]["summaries"], out["manual"]["summaries"]
    assert mine["summary_from"] == "states" and mine["summary"].startswith("The text follows ")
    assert "Mary Hale" in mine["summary"] and "Tom Reed" in mine["summary"]
    assert all(0 <= e["char_start"] < e["char_end"] <= len(story) for e in mine["summary_evidence"])
    # its sentences of prose as they stand (one of three words says too little to be one)
    assert theirs["summary_from"] == "lead" and theirs["summary"] == manual.replace(" Linux is supported.", "")
    assert [manual[e["char_start"] : e["char_end"]] for e in theirs["summary_evidence"]][:2] == [
        "Install the package with pip.", "Run the command with a folder of text files."
    ]  # fmt: skip
