"""The entity roll-up of a whole run, over the `facts` table read slice by slice (docs/performance.md 5b).

The driver holds the distinct names and the entities' final states as Arrow columns, never the facts:
1. count each surface name that is an entity over the table, and merge the names (`EntityIndex.from_counts`);
2. read the table again, a slice of whole documents at a time, each document's facts in reading order: each
   entity's final state in each document, and the number of documents that mention it (`document_states`);
3. assemble the `entities` table (`entities_table`) and commit it whole.

The result is `entity_rows` of the whole table, row for row (tests/pipeline/test_rollup.py).
"""

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.entities import EntityIndex, document_states, entities_table, is_entity
from pipeline.output import Output
from pipeline.schemas import FINAL_STATE

NAME_COLUMNS = ["subject", "object"]
# reading order within a document: facts are written chunk by chunk, lines in the order of their sentences
READING_ORDER = [("doc_id", "ascending"), ("chunk_index", "ascending")]


def write_entities(out: Output, run_id: str, files: int | None = None) -> int:
    """Roll every committed fact up into the `entities` table (rewritten whole); the number of entities.

    Each slice holds `files` (default READ_SLICE) units of the `facts` table, one document each, so a document is never split."""
    index = EntityIndex.from_counts(name_counts(out, files))
    n_documents: Counter[str] = Counter()
    states = []
    for facts in out.read_slices("facts", ["doc_id", *NAME_COLUMNS, *FINAL_STATE[1:]], files):
        part, mentioned = document_states(facts.sort_by(READING_ORDER).to_pylist(), index)
        states.append(part)
        n_documents.update(mentioned)
    table = entities_table(index, n_documents, states, run_id)
    out.write("entities", "entities", table)
    return table.num_rows


def name_counts(out: Output, files: int | None = None) -> Counter[str]:
    """Mentions of each surface name that is an entity (`is_entity`), as subject or object, in the whole table."""
    counts: Counter[str] = Counter()
    for facts in out.read_slices("facts", NAME_COLUMNS, files):
        names = pa.concat_arrays([facts.column(c).combine_chunks() for c in NAME_COLUMNS])
        distinct = pc.value_counts(names)
        for surface, n in zip(
            distinct.field("values").to_pylist(), distinct.field("counts").to_pylist(), strict=True
        ):
            if is_entity(surface):
                counts[surface] += n
    return counts
