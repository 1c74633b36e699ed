import json
import os
import posixpath
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from pipeline_support import fact_row

import pipeline.output
from pipeline.io import ReadConfig, list_inputs, read_corpus, safe_name
from pipeline.output import Output
from pipeline.schemas import ERRORS, FACTS, MANIFEST, to_table
from pipeline.stream import CorpusSource, Stream, duplicate_winners, read_tally, read_units

GOOD = "Call me Ishmael. Some years ago, never mind how long precisely."


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def make_unreadable(path: Path) -> None:
    """A file that is listed but cannot be read (as root chmod does not stop reads, so read /proc/self/mem)."""
    if os.geteuid() != 0:
        write(path, GOOD)
        path.chmod(0)
    else:
        path.symlink_to("/proc/self/mem")  # open() works, read() fails with EIO


def errors_by(errors: list[dict], key: str = "source") -> dict:
    return {e[key]: e for e in errors}


def test_reads_a_folder_recursively(tmp_path):
    write(tmp_path / "a.txt", GOOD)
    write(tmp_path / "sub" / "deeper" / "b.md", "# Title\n" + GOOD)
    write(tmp_path / "notes.csv", "not,a,document")  # unknown extensions are not inputs
    write(tmp_path / ".hidden.txt", GOOD)
    write(tmp_path / ".git" / "objects" / "ab.txt", GOOD)  # nothing under hidden folders either
    write(tmp_path / "_SUCCESS", "")
    docs, errors = read_corpus(str(tmp_path))
    assert errors == []
    assert [d.doc_id for d in docs] == ["a.txt", "sub/deeper/b.md"]
    assert docs[1].text == "# Title\n" + GOOD and docs[1].title == "b" and docs[1].source == "sub/deeper/b.md"


def test_reads_through_a_pyarrow_fs_uri(tmp_path):
    write(tmp_path / "a.txt", GOOD)
    docs, _ = read_corpus(tmp_path.as_uri())  # file:///...
    assert [d.doc_id for d in docs] == ["a.txt"]


def test_single_file_input(tmp_path):
    docs, _ = read_corpus(str(write(tmp_path / "only.txt", GOOD)))
    assert [(d.doc_id, d.text) for d in docs] == [("only.txt", GOOD)]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_corpus(str(tmp_path / "nope"))


def test_a_file_of_unknown_format_needs_the_format_option(tmp_path):
    path = write(tmp_path / "book.html", GOOD)
    with pytest.raises(ValueError, match="format"):
        read_corpus(str(path))
    assert [d.text for d in read_corpus(str(path), ReadConfig(format="text"))[0]] == [GOOD]


def test_format_option_reads_every_file_as_that_format(tmp_path):
    write(tmp_path / "a.data", json.dumps({"id": "a", "text": GOOD}))
    write(tmp_path / "b.log", json.dumps({"id": "b", "text": GOOD}))
    docs, errors = read_corpus(str(tmp_path), ReadConfig(format="jsonl"))
    assert [d.doc_id for d in docs] == ["a", "b"] and errors == []


def test_jsonl_ids_titles_and_metadata(tmp_path):
    lines = [
        {"id": "x1", "text": GOOD, "title": "First", "lang": "en"},
        {"id": 7, "text": "Second document."},
        {"text": "No id here."},
    ]
    write(tmp_path / "c.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs, errors = read_corpus(str(tmp_path))
    assert errors == []
    assert [d.doc_id for d in docs] == ["x1", "7", "c.jsonl:3"]
    assert docs[0].title == "First" and json.loads(docs[0].metadata) == {"lang": "en"}
    assert docs[0].source == "c.jsonl:1"


def test_parquet_with_configured_columns(tmp_path):
    table = pa.table({"key": ["p1", "p2"], "body": [GOOD, "Another one."], "other": [1, 2]})
    pq.write_table(table, tmp_path / "d.parquet")
    docs, errors = read_corpus(str(tmp_path), ReadConfig(id_column="key", text_column="body"))
    assert errors == [] and [(d.doc_id, d.text) for d in docs] == [("p1", GOOD), ("p2", "Another one.")]
    docs, _ = read_corpus(str(tmp_path), ReadConfig(id_column="absent", text_column="body"))
    assert [d.doc_id for d in docs] == ["d.parquet#0", "d.parquet#1"]  # ids derived from the source


@pytest.fixture
def bad_corpus(tmp_path) -> Path:
    """Every kind of bad input next to good documents."""
    root = tmp_path / "corpus"
    write(root / "good1.txt", GOOD)
    write(root / "empty.txt", "")
    write(root / "blank.txt", " \n\t\n  ")
    write(root / "binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(root / "latin1.txt", "Caf\xe9 au lait, na\xefve.".encode("latin-1"))
    write(root / "longline.txt", "x" * 20_000_000)  # one 20 MB line
    write(root / "toolong.md", "word " * 30_000)
    make_unreadable(root / "unreadable.txt")
    os.mkfifo(root / "fifo.txt")
    jsonl = [
        json.dumps({"id": "j1", "text": GOOD}),
        "{not json",
        json.dumps({"id": "j2", "text": None}),
        json.dumps({"id": "j3", "body": "wrong key"}),
        json.dumps({"id": "j1", "text": "a duplicate id"}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "j4", "text": 42}),
        json.dumps({"id": "j5", "text": "lone surrogate \ud800 here"}),
        json.dumps({"id": "j6", "text": "null char \u0000 inside"}),
        json.dumps({"id": "j7", "text": "y" * 20_000_000}),  # a 20 MB JSONL line
    ]
    write(
        root / "docs.jsonl",
        "\n".join(jsonl).encode()
        + b"\n"
        + b'{"id": "j8", "text": "bad \xff byte"}\n'
        + b'{"id": " ", "text": "an empty id"}\n',
    )
    pq.write_table(pa.table({"id": ["q1", "q2"], "text": [GOOD, None]}), root / "table.parquet")
    pq.write_table(pa.table({"id": ["r1"], "content": [GOOD]}), root / "nocol.parquet")
    pq.write_table(pa.table({"id": ["n1"], "text": [12345]}), root / "inttext.parquet")
    write(root / "corrupt.parquet", b"PAR1 this is not really parquet")
    return root


def test_bad_input_never_kills_the_read(bad_corpus):
    docs, errors = read_corpus(str(bad_corpus), ReadConfig(max_chars=100_000))
    assert sorted(d.doc_id for d in docs) == ["good1.txt", "j1", "j5", "j8", "latin1.txt", "q1"]
    got = {(e["source"], e["error_type"]) for e in errors}
    assert got == {
        ("empty.txt", "EmptyDocument"),
        ("blank.txt", "EmptyDocument"),
        ("binary.txt", "BinaryContent"),
        ("latin1.txt", "InvalidUTF8"),
        ("longline.txt", "DocumentTooLong"),
        ("toolong.md", "DocumentTooLong"),
        ("unreadable.txt", "UnreadableFile"),
        ("fifo.txt", "NotARegularFile"),
        ("docs.jsonl:2", "MalformedJSON"),
        ("docs.jsonl:3", "NullText"),
        ("docs.jsonl:4", "MissingText"),
        ("docs.jsonl:5", "DuplicateDocId"),
        ("docs.jsonl:6", "MalformedJSON"),
        ("docs.jsonl:7", "InvalidText"),
        ("docs.jsonl:8", "InvalidUTF8"),
        ("docs.jsonl:9", "BinaryContent"),
        ("docs.jsonl:10", "DocumentTooLong"),
        ("docs.jsonl:11", "InvalidUTF8"),
        ("docs.jsonl:12", "InvalidDocId"),
        ("inttext.parquet", "InvalidTextColumn"),
        ("table.parquet#1", "NullText"),
        ("nocol.parquet", "MissingTextColumn"),
        ("corrupt.parquet", "CorruptParquet"),
    }
    for e in errors:
        assert e["stage"] == "read" and e["source"] in e["message"]
    to_table(errors, ERRORS)  # every row fits the errors schema


def test_error_rows_name_the_document_and_the_problem(bad_corpus):
    _, errors = read_corpus(str(bad_corpus), ReadConfig(max_chars=100_000))
    by = errors_by(errors)
    assert by["docs.jsonl:3"]["doc_id"] == "j2" and "null" in by["docs.jsonl:3"]["message"]
    assert "'text'" in by["docs.jsonl:4"]["message"]
    assert "docs.jsonl:1" in by["docs.jsonl:5"]["message"] and by["docs.jsonl:5"]["doc_id"] == "j1"
    assert "max_chars=100,000" in by["toolong.md"]["message"]
    assert "'content'" in by["nocol.parquet"]["message"] and "'text'" in by["nocol.parquet"]["message"]
    assert "NUL" in by["binary.txt"]["message"]
    assert by["corrupt.parquet"]["doc_id"] is None


def test_invalid_utf8_is_replaced_and_flagged(bad_corpus):
    docs, _ = read_corpus(str(bad_corpus), ReadConfig(max_chars=100_000))
    by = {d.doc_id: d for d in docs}
    assert by["latin1.txt"].text == "Caf\ufffd au lait, na\ufffdve." and by["latin1.txt"].flags == (
        "invalid_utf8",
    )
    assert by["j8"].text == "bad \ufffd byte" and by["j5"].text == "lone surrogate \ufffd here"
    assert by["good1.txt"].flags == ()


def test_a_20mb_line_is_a_document_when_allowed(bad_corpus):
    docs, _ = read_corpus(str(bad_corpus), ReadConfig(max_chars=30_000_000))
    lengths = {d.doc_id: len(d.text) for d in docs}
    assert lengths["longline.txt"] == 20_000_000 and lengths["j7"] == 20_000_000


def test_bad_format_option_is_rejected():
    with pytest.raises(ValueError, match="format"):
        ReadConfig(format="csv")


@pytest.mark.parametrize(
    "doc_id", ["../../etc/passwd", "/abs/path", "a/b", "..", "", "ünï cødé", "x" * 500, "CON"]
)
def test_safe_name_never_escapes(doc_id):
    name = safe_name(doc_id)
    assert name and "/" not in name and "\\" not in name and name not in (".", "..")
    assert not name.startswith(".") and len(name) <= 120
    assert name == safe_name(doc_id)  # stable


def test_safe_name_keeps_safe_ids_and_separates_others():
    assert safe_name("book-01.txt") == "book-01.txt"
    names = {safe_name(x) for x in ["a/b", "a_b", "a:b", "a b", "x" * 500, "x" * 501]}
    assert len(names) == 6


def test_write_stays_inside_the_output_dir(tmp_path):
    out = Output(str(tmp_path / "out"))
    row = dict(doc_id="../../etc/passwd", source="s", stage="read", error_type="E", message="m", run_id="r")
    path = out.write("errors", safe_name(row["doc_id"]), to_table([row], ERRORS))
    assert Path(path).resolve().is_relative_to((tmp_path / "out").resolve())
    assert [p.name for p in (tmp_path / "out" / "errors").iterdir()] == [Path(path).name]
    with pytest.raises(ValueError, match="unsafe"):
        out.write("errors", "../../evil", to_table([row], ERRORS))


def test_writes_are_atomic_and_readable_by_pandas(tmp_path):
    out = Output(str(tmp_path / "out"))
    facts = [fact_row(doc_id=f"d{i}") for i in range(3)]
    for row in facts:
        out.write("facts", row["doc_id"], to_table([row], FACTS))
    out.write("facts", "d1", to_table([facts[1]], FACTS))  # rewriting a unit replaces it: no duplicates
    # a crashed writer leaves a hidden temp file behind; readers must not see it
    write(tmp_path / "out" / "facts" / ".tmp-d9-dead.parquet", b"PAR1 half written")
    assert pd.read_parquet(tmp_path / "out" / "facts")["doc_id"].tolist() == ["d0", "d1", "d2"]
    assert out.read("facts")["doc_id"].to_pylist() == ["d0", "d1", "d2"]
    assert out.names("facts") == ["d0", "d1", "d2"]
    assert out.read("summaries").num_rows == 0


def test_a_table_of_many_units_reads_slice_by_slice_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.output, "READ_SLICE", 2)  # 7 units: 4 slices, the last of one file
    out = Output(str(tmp_path / "out"))
    for i in range(7):
        rows = [fact_row(doc_id=f"d{i}", chunk_index=k) for k in range(i % 3)]  # d0, d3, d6 have no facts
        out.write("facts", f"d{i}", to_table(rows, FACTS))
    table = out.read("facts")
    assert table.schema == FACTS and table["doc_id"].to_pylist() == ["d1", "d2", "d2", "d4", "d5", "d5"]
    picked = out.read("facts", ["doc_id", "chunk_index"])
    assert (
        picked.column_names == ["doc_id", "chunk_index"]
        and picked["chunk_index"].to_pylist() == [0, 0, 1] * 2
    )
    assert out.num_rows("facts") == 6 and out.num_rows("summaries") == 0
    assert out.read("summaries", ["doc_id"]).column_names == ["doc_id"]


def test_write_rejects_a_wrong_schema(tmp_path):
    with pytest.raises(ValueError, match="schema"):
        Output(str(tmp_path)).write("facts", "x", pa.table({"a": [1]}))


def test_unwritable_output_is_reported(tmp_path):
    blocker = write(tmp_path / "file", "not a dir")
    with pytest.raises(PermissionError, match="not writable"):
        Output(str(blocker / "out")).check_writable()
    Output(str(tmp_path / "fine")).check_writable()
    assert list((tmp_path / "fine").iterdir()) == []  # the probe is gone


def stream_read(
    root: Path, out: Path, config: ReadConfig, batch_size: int = 2, max_files: int = 4
) -> tuple[list[list[dict]], list]:
    """The streaming read of run(): the documents of every lockstep group the read tasks emit, and the units."""
    _, base, files = list_inputs(str(root), config)
    Output(str(out)).check_writable()
    stream = Stream(str(root), base, str(out), config, batch_size, "r")
    units = read_units(files, max_files=max_files)  # several read tasks: duplicates cross task boundaries
    winners = duplicate_winners(stream, units)
    ds = ray.data.read_datasource(CorpusSource(stream, units, winners))
    groups = pa.concat_tables(ray.get(ds.to_arrow_refs())).to_pylist()
    assert all(1 <= len(g["docs"]) <= batch_size for g in groups)
    return [g["docs"] for g in groups], units


@pytest.mark.usefixtures("ray_session")
def test_the_streaming_read_keeps_every_bad_input_rule(bad_corpus, tmp_path):
    # a duplicate in a later file (and a later read task) than the first q1 and j1: the first still wins
    write(
        bad_corpus / "zz.jsonl",
        json.dumps({"id": "q1", "text": "later"}) + "\n" + json.dumps({"id": "j1", "text": "x"}),
    )
    config = ReadConfig(max_chars=100_000)
    docs, errors = read_corpus(str(bad_corpus), config, "r")
    groups, units = stream_read(bad_corpus, tmp_path / "out", config)
    streamed = [d for g in groups for d in g]
    assert len(units) == 4
    key = lambda d: d["doc_id"]  # noqa: E731
    assert sorted(streamed, key=key) == sorted(
        (d.to_row() | {"attempt": 1} for d in docs), key=key
    )  # the same documents, each once, text and all
    committed = Output(str(tmp_path / "out")).read("errors").to_pylist()
    by = lambda e: (e["source"], e["error_type"])  # noqa: E731
    assert sorted(committed, key=by) == sorted(errors, key=by)
    assert ("zz.jsonl:1", "DuplicateDocId") in {by(e) for e in committed}
    tally = read_tally(Output(str(tmp_path / "out")))
    assert (tally["documents"], tally["skipped"], tally["read_errors"]) == (len(docs), 0, len(errors))


@pytest.mark.usefixtures("ray_session")
def test_the_stream_joins_the_manifest_and_groups_within_a_window(tmp_path):
    root = tmp_path / "corpus"
    for i in range(12):
        write(root / f"d{i:02d}.txt", "word " * (1 + (i * 7) % 23))
    out = Output(str(tmp_path / "out"))
    row = dict(n_tokens=1, seconds=0.0, error=None, run_id="r", state=None)
    out.write(
        "manifest", "d03.txt", to_table([row | dict(doc_id="d03.txt", status="ok", attempts=1)], MANIFEST)
    )
    out.write(
        "manifest", "d04.txt", to_table([row | dict(doc_id="d04.txt", status="error", attempts=2)], MANIFEST)
    )
    groups, units = stream_read(root, tmp_path / "out", ReadConfig(), batch_size=2, max_files=3)
    streamed = [d for g in groups for d in g]
    ids = [d["doc_id"] for d in streamed]
    assert sorted(ids) == sorted(f"d{i:02d}.txt" for i in range(12) if i != 3)  # the finished one is dropped
    assert {d["doc_id"]: d["attempt"] for d in streamed}["d04.txt"] == 3
    assert read_tally(out)["skipped"] == 1 and read_tally(out)["documents"] == 12
    # groups are formed per window of the stream (a read task's files), not by sorting the whole corpus
    unit_of = {posixpath.basename(f.path): u.index for u in units for f in u.files}
    assert len(set(unit_of.values())) == 4
    assert all(len({unit_of[d["doc_id"]] for d in g}) == 1 for g in groups)
    # 3 files a unit: groups of 2 and 1, formed with the finished d03 (then dropped), so its unit gives 1 and 1
    assert sorted(map(len, groups)) == [1, 1, 1, 1, 1, 2, 2, 2]


def test_parts_written_as_one_file_committed_only_when_all_are_written(tmp_path):
    out = Output(str(tmp_path / "out"))
    parts = [to_table([fact_row(doc_id=f"d{i}")], FACTS) for i in range(3)]
    assert out.write_parts("facts", "all", iter(parts)) == 3
    assert pq.ParquetFile(out.path("facts", "all")).num_row_groups == 3
    assert out.read("facts")["doc_id"].to_pylist() == ["d0", "d1", "d2"]

    def failing():
        yield parts[0]
        yield pa.table({"a": [1]})  # a wrong schema half-way: nothing of the new file is committed

    with pytest.raises(ValueError, match="schema"):
        out.write_parts("facts", "all", failing())
    assert out.read("facts")["doc_id"].to_pylist() == ["d0", "d1", "d2"]
    assert not list((tmp_path / "out" / "facts").glob(".tmp-*"))
