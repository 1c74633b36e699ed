"""The output tables: one pyarrow schema per table, defined once, and helpers to build validated tables."""

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SUMMARIES = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("title", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("summary_from", pa.string()),  # states | lead | memory | notes (pipeline/summary.py)
        # the document's spans that say each summary sentence: source_text[char_start:char_end]
        pa.field(
            "summary_evidence",
            pa.list_(
                pa.struct(
                    [
                        pa.field("sentence", pa.int64()),  # the summary's sentence, from 0
                        pa.field("chunk_index", pa.int64()),
                        pa.field("char_start", pa.int64()),
                        pa.field("char_end", pa.int64()),
                    ]
                )
            ),
        ),
        pa.field("n_chars", pa.int64()),
        pa.field("n_tokens", pa.int64()),  # tokens read into memory
        pa.field("n_chunks", pa.int64()),
        pa.field("tokens_generated", pa.int64()),  # summary + facts
        pa.field("n_facts", pa.int64()),  # after de-duplication
        pa.field(
            "n_unparsed", pa.int64()
        ),  # generated fact lines that were not `subject | relation | object`
        pa.field("model", pa.string()),
        pa.field("memory_kind", pa.string()),
        pa.field("memory_size", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("device", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)

FACTS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("relation", pa.string(), nullable=False),
        pa.field("object", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int64()),
        pa.field("char_start", pa.int64()),  # evidence span: source_text[char_start:char_end]
        pa.field("char_end", pa.int64()),
        pa.field("score", pa.float64()),
        pa.field("model", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)

# the columns of a fact in an entity's final state in a document, named once
FINAL_STATE = ("doc_id", "relation", "object", "chunk_index", "char_start", "char_end")

ENTITIES = pa.schema(
    [
        pa.field("entity", pa.string(), nullable=False),  # normalised canonical name (pipeline/entities.py)
        pa.field("aliases", pa.list_(pa.string())),
        pa.field("n_documents", pa.int64()),
        pa.field("n_mentions", pa.int64()),
        # per document the entity is a subject in: its state at the end (its last fact there and its latest
        # changes, each with the "relation object" it superseded), with the evidence (pipeline/entities.py)
        pa.field(
            "final_states",
            pa.list_(
                pa.struct(
                    [
                        *(FACTS.field(n).with_nullable(True) for n in FINAL_STATE),
                        pa.field("supersedes", pa.string()),
                    ]
                )
            ),
        ),
        pa.field("run_id", pa.string()),
    ]
)

ERRORS = pa.schema(
    [
        pa.field("doc_id", pa.string()),  # null when the problem is not tied to one document
        pa.field("source", pa.string()),
        pa.field("stage", pa.string()),  # read | extract | write
        pa.field("error_type", pa.string()),
        pa.field("message", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)

MANIFEST = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("status", pa.string()),  # ok | error
        pa.field("attempts", pa.int64()),
        pa.field("n_tokens", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("state", pa.string()),  # with --save-states: the document's memory file under the output
    ]
)

TABLES: dict[str, pa.Schema] = {
    "summaries": SUMMARIES,
    "facts": FACTS,
    "entities": ENTITIES,
    "errors": ERRORS,
    "manifest": MANIFEST,
}

# What an actor returns per document: the rows it produced for each table (list columns), written by the sink.
RESULT_TABLES = ("summaries", "facts", "errors", "manifest")
RESULTS = pa.schema(
    [pa.field("doc_id", pa.string(), nullable=False)]
    + [pa.field(name, pa.list_(pa.struct(list(TABLES[name])))) for name in RESULT_TABLES]
    + [pa.field("checkpoint", pa.string())]  # the group's checkpoint folder, removed once committed
)

# What the read stage hands the actors: one row per lockstep group, so that no batching can split a group.
DOCUMENT = pa.struct(
    [
        pa.field("doc_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("title", pa.string()),
        pa.field("text", pa.large_string()),
        pa.field("attempt", pa.int64()),  # 1 + the attempts the manifest already records
    ]
)
GROUPS = pa.schema([pa.field("group", pa.int64()), pa.field("docs", pa.list_(DOCUMENT))])


def validate_row(row: Mapping[str, Any], schema: pa.Schema) -> None:
    """Raise ValueError if `row` has missing/unknown columns or a null in a non-nullable column."""
    names = set(schema.names)
    unknown, missing = set(row) - names, names - set(row)
    if unknown or missing:
        raise ValueError(
            f"row does not match schema: unknown columns {sorted(unknown)}, missing {sorted(missing)}"
        )
    for field in schema:
        if not field.nullable and row[field.name] is None:
            raise ValueError(f"column {field.name!r} must not be null, got row {dict(row)}")


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema` from row dicts, validating each row (types are checked by Arrow)."""
    rows = list(rows)
    for row in rows:
        validate_row(row, schema)
    return pa.Table.from_pylist(rows, schema=schema)


def check_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Return `table` cast to `schema`, raising ValueError when its columns differ."""
    if table.schema.names != schema.names:
        raise ValueError(f"columns {table.schema.names} differ from the schema's {schema.names}")
    return table.cast(schema)
