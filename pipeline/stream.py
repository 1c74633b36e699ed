"""Streaming reads: documents flow from storage to the actors through Ray Data, never through the driver.

The driver lists the input files (paths and sizes only) and cuts the sorted list into read units of a few files.
Each unit is one read task of `CorpusSource`, a Ray Data `Datasource`, run on the cluster. A read task:

1. reads its files with the readers of `pipeline/io.py`, so every bad-input rule of docs/pipeline.md holds;
2. resolves duplicate doc ids: the first in read order wins, across all files (`duplicate_winners`, a pass over
   the ids only, grouped on the cluster; skipped for a corpus of text files, whose ids are distinct paths);
3. joins each good document against the manifest by key: `<output>/manifest/<safe id>.parquet` exists with
   status ok -> finished, counted and dropped; otherwise it goes on with its attempt number;
4. forms lockstep groups within windows of `WINDOW_GROUPS * batch_size` documents of its own stream (longest
   first, then by id), and yields one row per group: a group is never split between actor calls;
5. writes its read errors to `errors/read-<unit>.parquet` and its counts to `_read/<unit>.json`, so a retried task
   rewrites the same two files.

A unit, its windows and therefore its groups depend on the input alone (sorted paths, file sizes, record order),
never on the cluster's size, so every actor count gives the same groups, and a resumed run re-forms a group
that was not committed as the same group (its mid-document checkpoint still applies).
"""

import json
import posixpath
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline.io import (
    JSONL_EXTENSIONS,
    PARQUET_EXTENSIONS,
    BadInput,
    Document,
    ReadConfig,
    error_row,
    flag_rows,
    open_fs,
    read_file,
    safe_name,
)
from pipeline.output import Output
from pipeline.schemas import GROUPS

UNIT_FILES = 32  # files per read task, at most (a read task streams any number of records out of them)
UNIT_BYTES = 32 << 20  # bytes of files per read task, at most (one larger file is a unit of its own)
WINDOW_GROUPS = 8  # a window of the stream holds this many lockstep groups' documents
TALLY = "_read"  # <output>/_read/<unit>.json: what each read task counted ('_': hidden from table readers)
READ_CPUS = 0  # reads wait on storage: actors holding every CPU must not hold back the reads that feed them


@dataclass(frozen=True)
class InputFile:
    """One input file as the driver listed it (pyarrow's FileInfo does not pickle)."""

    index: int  # position in the sorted listing: the read order
    path: str
    type: int  # pafs.FileType
    size: int | None

    def info(self) -> pafs.FileInfo:
        return pafs.FileInfo(self.path, type=pafs.FileType(self.type), size=self.size)


@dataclass(frozen=True)
class ReadUnit:
    """The files of one read task, in read order."""

    index: int
    files: tuple[InputFile, ...]

    @property
    def name(self) -> str:
        return f"read-{self.index:06d}"


def read_units(
    files: list[pafs.FileInfo], max_files: int = UNIT_FILES, max_bytes: int = UNIT_BYTES
) -> list[ReadUnit]:
    """Cut the sorted file listing into units of at most `max_files` files and `max_bytes` bytes."""
    units, current, size = [], [], 0
    for i, info in enumerate(files):
        f = InputFile(i, info.path, int(info.type), info.size)
        if current and (len(current) >= max_files or size + (f.size or 0) > max_bytes):
            units.append(ReadUnit(len(units), tuple(current)))
            current, size = [], 0
        current.append(f)
        size += f.size or 0
    if current:
        units.append(ReadUnit(len(units), tuple(current)))
    return units


def needs_id_pass(files: list[pafs.FileInfo], config: ReadConfig) -> bool:
    """Whether doc ids can repeat: only records (JSONL, Parquet) carry ids of their own."""
    if config.format in ("jsonl", "parquet"):
        return True
    return any(posixpath.splitext(f.path)[1].lower() in JSONL_EXTENSIONS + PARQUET_EXTENSIONS for f in files)


@dataclass(frozen=True)
class Stream:
    """What every read task needs to know: where the input and output are and how to read and group."""

    input: str
    root: str
    output: str
    read: ReadConfig
    batch_size: int
    run_id: str


# ---------------------------------------------------------------------------------------------- reading


def unit_documents(
    stream: Stream, unit: ReadUnit, winners: dict[str, tuple[int, str]], errors: list[dict]
) -> Iterator[tuple[int, Document]]:
    """(read-order key, Document) for each good, non-duplicate document of `unit`; problems go to `errors`."""
    fs, _ = open_fs(stream.input)
    seen: dict[str, str] = {}
    for f in unit.files:
        for k, item in enumerate(read_file(fs, stream.root, f.info(), stream.read)):
            order = (f.index << 32) | k
            if isinstance(item, BadInput):
                errors.append(item.row(stream.run_id))
                continue
            first = winners.get(item.doc_id, (order, item.source))
            if first[0] != order or item.doc_id in seen:
                source = seen.get(item.doc_id, first[1])
                msg = f"{item.source}: duplicate doc_id {item.doc_id!r} (first read from {source}); skipped"
                errors.append(
                    error_row(item.doc_id, item.source, "read", "DuplicateDocId", msg, stream.run_id)
                )
                continue
            seen[item.doc_id] = item.source
            errors.extend(flag_rows(item, stream.run_id))
            yield order, item


def manifest_status(out: Output, doc_id: str) -> tuple[bool, int]:
    """(finished with status ok, attempts so far) of `doc_id`, from its own manifest file."""
    rows = out.read_unit("manifest", safe_name(doc_id))
    if rows is None or rows.num_rows == 0:
        return False, 0
    row = rows.to_pylist()[-1]
    return row["status"] == "ok", row["attempts"] or 0


def document_groups(
    docs: list[dict], batch_size: int, all_docs: list[dict] | None = None
) -> list[list[dict]]:
    """Documents in lockstep groups of `batch_size`, longest first, then by id.

    With `all_docs` (the whole window, finished documents included), groups are formed from all of it and then
    keep only `docs`: a resumed run reads an unfinished group as the same group, so its checkpoint still applies.
    """
    todo = {d["doc_id"]: d for d in docs}
    ordered = sorted(all_docs if all_docs is not None else docs, key=lambda d: (-len(d["text"]), d["doc_id"]))
    groups = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    groups = [[todo[d["doc_id"]] for d in group if d["doc_id"] in todo] for group in groups]
    return [g for g in groups if g]


def read_unit(stream: Stream, unit: ReadUnit, winners: dict[str, tuple[int, str]]) -> Iterator[pa.Table]:
    """The read task of one unit: a one-row table per lockstep group still to read, window by window."""
    out, errors, tally = Output(stream.output), [], Counter()
    window, todo, n_groups = [], [], 0
    for _, doc in unit_documents(stream, unit, winners, errors):
        done, attempts = manifest_status(out, doc.doc_id)
        tally["documents"] += 1
        tally["skipped"] += done
        window.append({"doc_id": doc.doc_id, "text": doc.text})
        if not done:
            todo.append(doc.to_row() | {"attempt": attempts + 1})
        if len(window) == stream.batch_size * WINDOW_GROUPS:
            yield from _window_tables(document_groups(todo, stream.batch_size, window), unit, n_groups)
            n_groups += stream.batch_size * WINDOW_GROUPS
            window, todo = [], []
    yield from _window_tables(document_groups(todo, stream.batch_size, window), unit, n_groups)
    out.write_errors(unit.name, errors)
    tally["read_errors"] = len(errors)
    out.write_json(posixpath.join(TALLY, unit.name), dict(tally))


def _window_tables(groups: list[list[dict]], unit: ReadUnit, first: int) -> Iterator[pa.Table]:
    """A window's groups, shortest first: the first commit comes after the least reading (groups as formed)."""
    for g in reversed(range(len(groups))):
        yield group_table(groups[g], (unit.index << 20) + first + g)


def group_table(docs: list[dict], group: int = 0) -> pa.Table:
    """One lockstep group as the actors take it: a table of one `schemas.GROUPS` row."""
    return pa.Table.from_pylist([{"group": group, "docs": docs}], schema=GROUPS)


class CorpusSource(Datasource):
    """Ray Data Datasource of the corpus: one read task per unit, one row per lockstep group."""

    def __init__(self, stream: Stream, units: list[ReadUnit], winners: dict[str, tuple[int, str]]):
        self.stream, self.units, self.winners = stream, units, winners

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(f.size or 0 for u in self.units for f in u.files)

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        # one task per unit whatever `parallelism` asks: units (and so groups) depend on the input alone
        stream, winners = self.stream, self.winners
        return [
            ReadTask(
                lambda unit=unit: read_unit(stream, unit, winners),
                BlockMetadata(
                    num_rows=None,
                    size_bytes=sum(f.size or 0 for f in unit.files),
                    exec_stats=None,
                    input_files=tuple(f.path for f in unit.files),
                ),
                schema=GROUPS,
            )
            for unit in self.units
        ]


# ---------------------------------------------------------------------------------------------- duplicates

IDS = pa.schema([("doc_id", pa.string()), ("order", pa.int64()), ("source", pa.string())])


class IdSource(CorpusSource):
    """The ids of the good documents only, with their read order: what `duplicate_winners` groups."""

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        stream = self.stream
        return [
            ReadTask(
                lambda unit=unit: _unit_ids(stream, unit),
                BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None),
                schema=IDS,
            )
            for unit in self.units
        ]


def _unit_ids(stream: Stream, unit: ReadUnit) -> Iterator[pa.Table]:
    rows = [
        {"doc_id": d.doc_id, "order": order, "source": d.source}
        for order, d in unit_documents(stream, unit, {}, [])
    ]
    yield pa.Table.from_pylist(rows, schema=IDS)


def _first_of_repeated(group: pa.Table) -> pa.Table:
    if group.num_rows < 2:
        return group.slice(0, 0)
    return group.sort_by("order").slice(0, 1)


def duplicate_winners(stream: Stream, units: list[ReadUnit]) -> dict[str, tuple[int, str]]:
    """doc id -> (read order, source) of the first good document, for the ids read more than once.

    The ids are grouped on the cluster; only the repeated ones (usually none) come back to the driver."""
    ids = ray.data.read_datasource(IdSource(stream, units, {}), num_cpus=READ_CPUS)
    partitions = max(1, min(len(units), int(ray.cluster_resources().get("CPU", 1))))
    firsts = ids.groupby("doc_id", num_partitions=partitions).map_groups(
        _first_of_repeated, batch_format="pyarrow", num_cpus=READ_CPUS
    )
    return {r["doc_id"]: (r["order"], r["source"]) for r in firsts.take_all()}


# ---------------------------------------------------------------------------------------------- counts


def clear_read_state(out: Output, units: list[ReadUnit]) -> None:
    """Before a run: drop the counts of an earlier one, and read errors of units this listing no longer has."""
    out.delete_dir(TALLY)
    keep = {u.name for u in units}
    for name in out.names("errors"):
        if name == "read" or (name.startswith("read-") and name not in keep):
            out.delete("errors", name)


def read_tally(out: Output) -> Counter:
    """The counts of every read task of this run (documents, skipped, read_errors), summed."""
    total: Counter = Counter()
    for name in out.files(TALLY):
        total.update(json.loads(out.read_bytes(posixpath.join(TALLY, name))))
    return total
