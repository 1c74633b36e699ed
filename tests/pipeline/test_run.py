"""End to end on local Ray: real actors, real Parquet, tiny real models."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
from pipeline_support import CHUNK_SIZE, FACT_LINE, SUMMARY, corpus_file, random_model

import pipeline.run
from pipeline.chunking import chunk_text
from pipeline.config import ExtractConfig
from pipeline.facts import normalize
from pipeline.io import read_corpus, safe_name
from pipeline.output import Output
from pipeline.run import run
from pipeline.schemas import MANIFEST, TABLES, to_table
from pipeline.stream import document_groups

pytestmark = pytest.mark.usefixtures("ray_session")


def make_corpus(root: Path, n_short: int, long: bool) -> Path:
    """Short plays, optionally three >=100k-char stretches of Moby-Dick and a book's first 150k characters (a
    whole book doubled the suite's longest setup; tests/pipeline/test_chunking.py chunks whole books), plus bad
    files."""
    plays = corpus_file("shakespeare.txt").read_text(encoding="utf-8")
    for i in range(n_short):
        (root / "plays").mkdir(parents=True, exist_ok=True)
        (root / "plays" / f"play{i:02d}.txt").write_text(plays[i * 20_000 : i * 20_000 + 2_000 + 700 * i])
    if long:
        moby = corpus_file("moby_dick.txt").read_text(encoding="utf-8")
        for i in range(3):
            (root / f"moby{i}.md").write_text(
                moby[200_000 * (i + 1) : 200_000 * (i + 1) + 100_000 + 5_000 * i]
            )
        book = corpus_file("pride_and_prejudice.txt").read_text(encoding="utf-8")[:150_000]
        (root / "pride_and_prejudice.txt").write_text(book)
    (root / "empty.txt").write_text("")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    (root / "more.jsonl").write_text(
        json.dumps({"id": "j1", "text": "Elizabeth walked to the house at Longbourn."}) + "\n{broken json\n"
    )
    return root


def tables(output: Path) -> dict[str, pd.DataFrame]:
    """Every table, sorted, without the wall-clock column (the only one allowed to differ between runs)."""
    out = {}
    for name in ("summaries", "facts", "errors", "manifest", "entities"):
        df = pd.read_parquet(output / name)
        keys = [
            c for c in ("doc_id", "chunk_index", "subject", "entity", "source", "stage") if c in df.columns
        ]
        out[name] = df.drop(columns=["seconds"], errors="ignore").sort_values(keys).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, fact_model):
    root = make_corpus(tmp_path_factory.mktemp("corpus"), n_short=17, long=True)
    output = tmp_path_factory.mktemp("out") / "run"
    config = ExtractConfig(
        input=str(root),
        output=str(output),
        model=str(fact_model),
        workers=2,
        batch_size=4,
        max_new_tokens_facts=12,
        max_new_tokens_summary=10,
    )
    report = run(config)
    docs, _ = read_corpus(str(root))
    return config, report, {d.doc_id: d for d in docs}, output


@pytest.mark.slow
def test_every_document_has_exactly_one_summary(e2e):
    _, report, docs, output = e2e
    summaries = pd.read_parquet(output / "summaries")
    assert len(docs) >= 20 and sum(len(d.text) >= 100_000 for d in docs.values()) >= 4
    assert sorted(summaries["doc_id"]) == sorted(docs)
    assert (summaries["summary"] == SUMMARY).all()
    assert (summaries["n_chars"] == summaries["doc_id"].map(lambda i: len(docs[i].text))).all()
    assert report.processed == report.documents == len(docs) and report.failed == 0


def test_facts_have_evidence_inside_their_chunk(e2e, tokenizer):
    _, _, docs, output = e2e
    facts = pd.read_parquet(output / "facts")
    text_chunk = CHUNK_SIZE  # facts_pass shared: the facts prompt takes no room in a chunk
    subject, relation, obj = (p.strip() for p in FACT_LINE.split("|"))
    assert sorted(facts["doc_id"]) == sorted(docs)  # the same line from every chunk: one fact per document
    for f in facts.itertuples():
        assert (f.subject, f.relation, f.object) == (subject, relation, obj)
        text = docs[f.doc_id].text
        chunk = chunk_text(text, tokenizer, text_chunk)[f.chunk_index]
        assert chunk.char_start <= f.char_start < f.char_end <= chunk.char_end
        if f.score > 0:  # a narrowed span starts and ends at a mention of the subject or object
            span = text[f.char_start : f.char_end].casefold()
            assert span.startswith((subject.casefold(), obj.casefold()))
            assert span.endswith((subject.casefold(), obj.casefold()))
    assert facts.loc[facts["doc_id"] == "j1", "score"].item() == 1.0


def test_tables_match_their_schemas(e2e):
    _, _, _, output = e2e
    for name, schema in TABLES.items():
        files = sorted((output / name).glob("*.parquet"))
        assert files, name
        for f in files:
            assert pq.read_schema(f).equals(schema), f
        assert list(pd.read_parquet(output / name).columns) == schema.names


def test_entities_errors_manifest_and_report(e2e):
    _, report, docs, output = e2e
    entities = pd.read_parquet(output / "entities").set_index("entity")
    subject, _, obj = (p.strip() for p in FACT_LINE.split("|"))
    for name, alias in ((normalize(subject), subject), (normalize(obj), obj)):
        assert entities.loc[name, "n_documents"] == entities.loc[name, "n_mentions"] == len(docs)
        assert list(entities.loc[name, "aliases"]) == [alias]
    states = entities.loc[normalize(subject), "final_states"]  # the subject's last fact in each document
    assert sorted(s["doc_id"] for s in states) == sorted(docs) and all(s["object"] == obj for s in states)
    assert list(entities.loc[normalize(obj), "final_states"]) == []  # never a subject
    errors = pd.read_parquet(output / "errors")
    assert set(zip(errors["source"], errors["error_type"], strict=True)) == {
        ("empty.txt", "EmptyDocument"),
        ("binary.txt", "BinaryContent"),
        ("more.jsonl:2", "MalformedJSON"),
    }
    assert (errors["stage"] == "read").all() and report.read_errors == 3
    manifest = pd.read_parquet(output / "manifest")
    assert sorted(manifest["doc_id"]) == sorted(docs) and (manifest["status"] == "ok").all()
    summaries = pd.read_parquet(output / "summaries")
    assert report.tokens_read == summaries["n_tokens"].sum() > 150_000
    assert report.tokens_generated == summaries["tokens_generated"].sum()
    assert report.facts == len(docs) and report.entities == len(entities)
    assert json.loads((output / "report.json").read_text())["processed"] == len(docs)
    assert not list(output.rglob(".tmp-*"))  # nothing half-written left behind


def small_config(root: Path, output: Path, model: Path, **kw) -> ExtractConfig:
    kw = dict(batch_size=3, max_new_tokens_facts=6, max_new_tokens_summary=8) | kw
    return ExtractConfig(input=str(root), output=str(output), model=str(model), **kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("small"), n_short=7, long=False)
    return root, random_model(tmp_path_factory.mktemp("random") / "model", chunk_size=96)


@pytest.fixture(scope="module")
def one_actor(small, tmp_path_factory) -> Path:
    """The small corpus read by one actor, under a Ray Data no-progress timeout of 1 s: Ray Data fails a run
    whose operators make no progress for 30 minutes (by default), and one actor call reads a whole group, so
    each group here takes longer than the timeout (the actor alone takes longer than 1 s to start)."""
    root, model = small
    out = tmp_path_factory.mktemp("one") / "out"
    context = ray.data.DataContext.get_current()
    before = context.execution_no_progress_timeout_s
    context.execution_no_progress_timeout_s = 1
    try:
        run(small_config(root, out, model, workers=1))
    finally:
        context.execution_no_progress_timeout_s = before
    return out


@pytest.fixture(scope="module")
def two_actors(small, tmp_path_factory) -> Path:
    root, model = small
    out = tmp_path_factory.mktemp("two") / "out"
    run(small_config(root, out, model, workers=2))
    return out


@pytest.mark.slow
def test_same_tables_whatever_the_number_of_actors(one_actor, two_actors):
    # a random model: its junk output moves with the smallest numerical change
    one, two = tables(one_actor), tables(two_actors)
    for name in one:
        pd.testing.assert_frame_equal(one[name], two[name], obj=name)
    assert len(one["summaries"]) == 8 and one["summaries"]["summary"].str.len().gt(0).all()


@pytest.mark.slow
def test_a_group_slower_than_ray_datas_no_progress_timeout_still_finishes(one_actor):
    assert len(pd.read_parquet(one_actor / "summaries")) == 8


@pytest.mark.slow
def test_a_queue_budget_smaller_than_one_group_still_reads_every_group(
    small, one_actor, tmp_path, monkeypatch
):
    root, model = small
    monkeypatch.setattr(pipeline.run, "QUEUED_BYTES_PER_WORKER", 1)  # each group is kilobytes
    report = run(small_config(root, tmp_path / "out", model, workers=1))
    assert report.processed == report.documents == 8
    one, tight = tables(one_actor), tables(tmp_path / "out")
    for name in one:
        pd.testing.assert_frame_equal(one[name], tight[name], obj=name)
    context = ray.data.DataContext.get_current()  # the run's settings are put back after it
    assert context.execution_options.resource_limits.object_store_memory == float("inf")
    assert context.execution_no_progress_timeout_s != -1


def test_groups_depend_on_the_input_only():
    docs = [
        {"doc_id": f"d{i}", "text": "x" * (i % 4), "source": "", "title": None, "attempt": 1}
        for i in range(10)
    ]
    groups = document_groups(docs, 4)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert [d["doc_id"] for d in groups[0]] == ["d3", "d7", "d2", "d6"]  # longest first, then by id
    assert document_groups(list(reversed(docs)), 4) == groups
    finished = {"d7", "d1"}  # a resumed window: groups as before, less the finished documents
    resumed = document_groups([d for d in docs if d["doc_id"] not in finished], 4, all_docs=docs)
    assert resumed == [[d for d in g if d["doc_id"] not in finished] for g in groups]


@pytest.mark.slow
def test_a_rerun_resumes_and_keeps_each_document_once(small, two_actors, tmp_path):
    root, model = small
    shutil.copytree(two_actors, tmp_path / "out")  # a finished run of the same configuration, rerun here
    config = small_config(root, tmp_path / "out", model, workers=2)
    first = tables(tmp_path / "out")
    again = run(config)
    assert (again.processed, again.skipped) == (0, 8)
    out = Output(str(tmp_path / "out"))
    killed, failed = safe_name("plays/play00.txt"), safe_name("plays/play03.txt")
    out.delete("manifest", killed)  # killed before it finished: no manifest row
    out.delete("summaries", killed)
    row = out.read("manifest").filter(pc.field("doc_id") == "plays/play03.txt").to_pylist()[0]
    out.write("manifest", failed, to_table([row | {"status": "error", "error": "boom"}], MANIFEST))
    resumed = run(config)
    assert (resumed.processed, resumed.skipped) == (2, 6)
    attempts = dict(
        zip(*out.read("manifest").select(["doc_id", "attempts"]).to_pydict().values(), strict=True)
    )
    assert attempts["plays/play00.txt"] == 1 and attempts["plays/play03.txt"] == 2
    assert (pd.read_parquet(tmp_path / "out" / "manifest")["status"] == "ok").all()
    final = tables(tmp_path / "out")
    for name in ("summaries", "facts", "errors", "entities"):
        pd.testing.assert_frame_equal(first[name], final[name], obj=name)


def test_a_run_of_bad_documents_only_leaves_every_table_readable(small, tmp_path):
    _, model = small
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.txt").write_text("")
    (tmp_path / "in" / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    report = run(small_config(tmp_path / "in", tmp_path / "out", model, workers=1))
    assert report.processed == 0 and report.read_errors == 2
    read = {name: pd.read_parquet(path) for name, path in report.tables.items()}  # none missing
    assert len(read["errors"]) == 2 and read["facts"].empty and read["entities"].empty


@pytest.mark.slow
def test_kv_memory_end_to_end(small, tmp_path):
    root, model = small
    report = run(small_config(root, tmp_path / "kv", model, memory="kv", workers=1))
    summaries = pd.read_parquet(tmp_path / "kv" / "summaries")
    assert report.processed == 8 and (summaries["memory_kind"] == "kv").all()
