"""The entity roll-up of a whole run, over the `facts` table read slice by slice (docs/performance.md 5b).

The driver holds the distinct names and one part of the entities' final states, never the facts:
1. count each surface name that is an entity over the table, and merge the names (`EntityIndex.from_counts`);
   the entities, sorted by key, are cut into parts of at most PART_MENTIONS mentions;
2. read the table again, a slice of whole documents at a time, each document's facts in reading order: each
   entity's final state in each document and the number of documents that mention it (`document_states`); a
   slice's states go to a hidden scratch folder under the output, one file per part they belong to;
3. write the `entities` table one part at a time (`entities_table`), as one file committed whole.

The result is `entity_rows` of the whole table, row for row (tests/pipeline/test_rollup.py).
"""

import bisect
import posixpath
from collections import Counter
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.entities import Entity, EntityIndex, document_states, entities_table, is_entity
from pipeline.heap import release_memory
from pipeline.output import Output
from pipeline.schemas import FINAL_STATE

NAME_COLUMNS = ["subject", "object"]
# reading order within a document: facts are written chunk by chunk, lines in the order of their sentences
READING_ORDER = [("doc_id", "ascending"), ("chunk_index", "ascending")]
# mentions of the entities of one part: a part's final states (at most one per mention as a subject) are what
# the driver holds at once, ~0.3 KB each (docs/performance.md 5b)
PART_MENTIONS = 100_000
SCRATCH = ".entities-parts"  # under the output root; '.' hides it from readers


def write_entities(
    out: Output, run_id: str, files: int | None = None, part_mentions: int = PART_MENTIONS
) -> int:
    """Roll every committed fact up into the `entities` table (rewritten whole); the number of entities.

    Each slice holds `files` (default READ_SLICE) units of the `facts` table, one document each, so a document
    is never split across slices."""
    index = EntityIndex.from_counts(name_counts(out, files))
    entities = sorted(index.entities.values(), key=lambda e: e.key)
    parts = cut(entities, part_mentions)
    bounds = [entities[start].key for start, _ in parts[1:]]  # the first key of every part but the first
    out.delete_dir(SCRATCH)  # a killed roll-up's
    n_documents: Counter[str] = Counter()
    columns = ["doc_id", *NAME_COLUMNS, *FINAL_STATE[1:]]
    for i, facts in enumerate(out.read_slices("facts", columns, files)):
        states, mentioned = document_states(facts.sort_by(READING_ORDER).to_pylist(), index)
        n_documents.update(mentioned)
        part_of = pa.array([bisect.bisect_right(bounds, e) for e in states["entity"].to_pylist()], pa.int64())
        for p in pc.unique(part_of).to_pylist():
            _write_scratch(out, p, i, states.filter(pc.equal(part_of, p)))
        del facts, states, part_of
        release_memory()

    def tables() -> Iterator[pa.Table]:
        for p, (start, end) in enumerate(parts):
            yield entities_table(entities[start:end], n_documents, _read_scratch(out, p), run_id)
            release_memory()

    n = out.write_parts("entities", "entities", tables())
    out.delete_dir(SCRATCH)
    return n


def cut(entities: list[Entity], part_mentions: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `entities` of at most `part_mentions` mentions each (an entity with more is a part
    of its own); at least one range, empty where there are no entities."""
    parts, start, total = [], 0, 0
    for i, e in enumerate(entities):
        if i > start and total + e.n_mentions > part_mentions:
            parts.append((start, i))
            start, total = i, 0
        total += e.n_mentions
    return [*parts, (start, len(entities))]


def _write_scratch(out: Output, part: int, slice_: int, states: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(states, sink)
    out.write_bytes(
        posixpath.join(SCRATCH, f"{part:06d}", f"{slice_:06d}.parquet"), sink.getvalue().to_pybytes()
    )


def _read_scratch(out: Output, part: int) -> list[pa.Table]:
    folder = posixpath.join(SCRATCH, f"{part:06d}")
    return [
        pq.read_table(pa.BufferReader(out.read_bytes(posixpath.join(folder, f)))) for f in out.files(folder)
    ]


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
        del facts, names, distinct
        release_memory()
    return counts
