import pandas as pd
import pyarrow as pa
import pytest
from pipeline_support import fact_row

from pipeline.schemas import ENTITIES, ERRORS, FACTS, MANIFEST, SUMMARIES, TABLES, check_table, to_table


def test_every_table_has_its_schema():
    assert TABLES == {
        "summaries": SUMMARIES,
        "facts": FACTS,
        "entities": ENTITIES,
        "errors": ERRORS,
        "manifest": MANIFEST,
    }
    assert SUMMARIES.names[:4] == ["doc_id", "source", "title", "summary"]
    assert ENTITIES.field("aliases").type == pa.list_(pa.string())
    assert ERRORS.field("doc_id").nullable and not FACTS.field("doc_id").nullable


def test_to_table_round_trips_through_parquet(tmp_path):
    table = to_table([fact_row(), fact_row(subject="Ishmael")], FACTS)
    assert table.schema.equals(FACTS)
    table.to_pandas().to_parquet(tmp_path / "f.parquet")
    assert pd.read_parquet(tmp_path / "f.parquet")["subject"].tolist() == ["Ahab", "Ishmael"]


def test_empty_rows_give_an_empty_table_with_the_schema():
    assert to_table([], ERRORS).schema.equals(ERRORS)


@pytest.mark.parametrize(
    "row, problem",
    [
        (fact_row(extra=1), "unknown columns"),
        ({k: v for k, v in fact_row().items() if k != "score"}, "missing"),
        (fact_row(doc_id=None), "must not be null"),
    ],
)
def test_to_table_rejects_rows_that_do_not_match(row, problem):
    with pytest.raises(ValueError, match=problem):
        to_table([row], FACTS)


def test_to_table_rejects_wrong_types():
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        to_table([fact_row(chunk_index="zero")], FACTS)


def test_check_table_casts_and_rejects():
    loose = pa.table(
        {
            "entity": ["a"],
            "aliases": [["A"]],
            "n_documents": [1],
            "n_mentions": [2],
            "final_states": [[]],
            "run_id": ["r"],
        }  # fmt: skip
    )
    assert check_table(loose, ENTITIES).schema.equals(ENTITIES)
    with pytest.raises(ValueError, match="differ"):
        check_table(loose.drop_columns(["run_id"]), ENTITIES)
