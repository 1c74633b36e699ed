import random

import pyarrow as pa
from pipeline_support import fact_row

from pipeline.entities import Entity, entity_rows
from pipeline.output import Output
from pipeline.rollup import _write_scratch, cut, name_counts, write_entities
from pipeline.schemas import ENTITIES, FACTS, to_table

# forms of a few people that merge (or must not) across documents, and things that are no entity
NAMES = ["Mr. Darcy", "Darcy", "Fitzwilliam Darcy", "Mr Darcy", "Elizabeth", "Elizabeth Bennet", "Mrs. Bennet",
         "Mr. Bennet", "Bennet", "Captain Ahab", "captain  ahab", "the White Whale", "The white whale", "he"]  # fmt: skip
THINGS = ["the ledger", "the house", "Meryton", "the Pequod", "200", "quite young", "her", "the lighthouse"]
VERBS = [
    "keeps the ledger in",
    "moved the ledger to",
    "walked to",
    "said",
    "was happy",
    "was not happy",
    "saw",
]


def facts_corpus(n_docs: int, seed: int = 0) -> dict[str, list[dict]]:
    """Facts of `n_docs` documents in reading order, each naming people in several forms."""
    rng = random.Random(seed)
    corpus = {}
    for d in range(n_docs):
        doc = f"doc-{d:03d}"
        rows = []
        for chunk in range(rng.randint(0, 5)):
            for k in range(rng.randint(1, 6)):
                start = chunk * 1000 + k * 50
                subject, obj = rng.choice(NAMES), rng.choice(THINGS + NAMES)
                rows.append(fact_row(doc_id=doc, subject=subject, relation=rng.choice(VERBS), object=obj,
                                     chunk_index=chunk, char_start=start, char_end=start + 40))  # fmt: skip
        corpus[doc] = rows
    return corpus


def write_facts(out: Output, corpus: dict[str, list[dict]]) -> None:
    for doc, rows in corpus.items():
        out.write("facts", doc, to_table(rows, FACTS))


def test_the_roll_up_slice_by_slice_is_the_roll_up_of_the_whole_table(tmp_path):
    corpus = facts_corpus(23)
    out = Output(str(tmp_path / "out"))
    write_facts(out, corpus)
    whole = entity_rows([row for rows in corpus.values() for row in rows], run_id="r")
    assert any(len(r["final_states"]) > 2 and r["n_documents"] > 2 for r in whole)  # a case worth comparing
    for files, part_mentions in ((1, 10**6), (4, 10**6), (256, 10**6), (4, 40), (1, 1)):
        assert write_entities(out, "r", files=files, part_mentions=part_mentions) == len(whole)
        table = out.read("entities")
        assert table.schema == ENTITIES and table.to_pylist() == whole, (files, part_mentions)
        assert out.dirs("") == ["entities", "facts"]  # the scratch parts are gone


def test_a_killed_roll_ups_scratch_parts_are_not_read(tmp_path):
    out = Output(str(tmp_path / "out"))
    write_facts(out, facts_corpus(5, seed=2))
    write_entities(out, "r", part_mentions=20)
    expected = out.read("entities")
    stale = pa.table({"entity": ["mr. darcy"], "doc_id": ["zzz"]})
    for part in range(3):
        _write_scratch(out, part, 99, stale)  # as a roll-up killed after its second pass leaves them
    write_entities(out, "r", part_mentions=20)
    assert out.read("entities").equals(expected)


def test_parts_hold_at_most_their_mentions_unless_one_entity_has_more():
    entities = [Entity(k, k, "", set(), n, set()) for k, n in zip("abcde", (3, 3, 9, 1, 1), strict=True)]
    assert cut(entities, 6) == [(0, 2), (2, 3), (3, 5)]
    assert cut(entities, 100) == [(0, 5)] and cut([], 6) == [(0, 0)]


def test_names_are_counted_over_every_slice_and_non_entities_left_out(tmp_path):
    corpus = facts_corpus(9, seed=1)
    out = Output(str(tmp_path / "out"))
    write_facts(out, corpus)
    counts = name_counts(out, files=2)
    rows = [row for rows in corpus.values() for row in rows]
    assert counts["Mr. Darcy"] == sum((r["subject"], r["object"]).count("Mr. Darcy") for r in rows) > 0
    assert {"he", "200", "quite young", "her"}.isdisjoint(counts)


def test_a_run_without_facts_writes_an_empty_entities_table(tmp_path):
    out = Output(str(tmp_path / "out"))
    assert write_entities(out, "r") == 0
    assert out.read("entities").num_rows == 0
    out.write("facts", "d", to_table([], FACTS))
    assert write_entities(out, "r") == 0 and out.read("entities").schema == ENTITIES


def test_the_states_of_a_document_stay_in_its_reading_order_when_its_rows_are_not(tmp_path):
    rows = [fact_row(doc_id="a", subject="Halvorsen", relation="moved the ledger to", object="Tromsø",
                     chunk_index=2, char_start=2000, char_end=2040),
            fact_row(doc_id="a", subject="Halvorsen", relation="keeps the ledger in", object="Bergen",
                     chunk_index=0, char_start=10, char_end=50)]  # fmt: skip
    out = Output(str(tmp_path / "out"))
    out.write("facts", "a", pa.Table.from_pylist(rows, schema=FACTS))
    write_entities(out, "r")
    entities = {r["entity"]: r for r in out.read("entities").to_pylist()}
    (state,) = entities["halvorsen"]["final_states"]
    assert (state["object"], state["supersedes"]) == ("Tromsø", "keeps the ledger in Bergen")
