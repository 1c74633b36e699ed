"""Reading a corpus (text folder, JSONL, Parquet; local or any pyarrow.fs URI); pipeline/output.py writes.

Bad input never stops a read: every problem becomes an `errors` row (stage="read") and every good document is
still returned. Rules (see docs/pipeline.md): invalid UTF-8 is decoded with U+FFFD and flagged with an
`InvalidUTF8` row but still processed; for duplicate doc ids the first one in read order wins.
"""

import hashlib
import io
import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TEXT_EXTENSIONS = (".txt", ".md")
JSONL_EXTENSIONS = (".jsonl", ".ndjson")
PARQUET_EXTENSIONS = (".parquet",)
FORMATS = ("auto", "text", "jsonl", "parquet")


@dataclass(frozen=True)
class ReadConfig:
    """How to find documents in the input."""

    format: str = field(default="auto", metadata={"help": "auto (by file extension), text, jsonl or parquet",
                                                  "choices": FORMATS})  # fmt: skip
    id_column: str = field(default="id", metadata={"help": "JSONL key / Parquet column of the document id "
                                                   "(derived from the file name if absent)"})  # fmt: skip
    text_column: str = field(default="text", metadata={"help": "JSONL key / Parquet column of the text"})
    title_column: str = field(default="title", metadata={"help": "JSONL key / Parquet column of the title"})
    max_chars: int = field(default=10_000_000, metadata={"help": "longer documents are recorded in `errors` "
                                                         "(DocumentTooLong), not truncated"})  # fmt: skip

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")


@dataclass(frozen=True)
class Document:
    """One document to process; `flags` records read-time repairs (e.g. invalid_utf8)."""

    doc_id: str
    text: str
    source: str
    title: str | None = None
    metadata: str | None = None  # JSON object of extra input fields
    flags: tuple[str, ...] = field(default=())

    def to_row(self) -> dict:
        return {"doc_id": self.doc_id, "source": self.source, "title": self.title, "text": self.text}


class BadInput(Exception):
    """A document or input file that cannot be read; becomes one `errors` row."""

    def __init__(self, error_type: str, message: str, source: str, doc_id: str | None = None):
        where = source if doc_id in (None, source) else f"{source} (doc_id {doc_id!r})"
        super().__init__(f"{where}: {message}")
        self.error_type, self.source, self.doc_id = error_type, source, doc_id

    def row(self, run_id: str = "") -> dict:
        return error_row(self.doc_id, self.source, "read", self.error_type, str(self), run_id)


def error_row(
    doc_id: str | None, source: str, stage: str, error_type: str, message: str, run_id: str
) -> dict:
    """One row of the `errors` table."""
    return {
        "doc_id": doc_id,
        "source": source,
        "stage": stage,
        "error_type": error_type,
        "message": message,
        "run_id": run_id,
    }


# ---------------------------------------------------------------------------------------------- file names

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(doc_id: str, max_len: int = 100) -> str:
    """A file-name component for `doc_id`: unchanged if already safe, else sanitised plus a short hash."""
    name = _UNSAFE.sub("_", doc_id).strip("._")[:max_len]
    if name and name == doc_id:
        return name
    digest = hashlib.sha256(doc_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{name or 'doc'}-{digest}"


# ---------------------------------------------------------------------------------------------- reading

_SURROGATE = re.compile("[\ud800-\udfff]")


def open_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path for a local path or any URI pyarrow.fs understands (s3://, gs://, file://)."""
    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


def _format_of(path: str, config: ReadConfig) -> str | None:
    if config.format != "auto":
        return config.format
    ext = posixpath.splitext(path)[1].lower()
    for fmt, exts in (
        ("text", TEXT_EXTENSIONS),
        ("jsonl", JSONL_EXTENSIONS),
        ("parquet", PARQUET_EXTENSIONS),
    ):
        if ext in exts:
            return fmt
    return None


def list_inputs(uri: str, config: ReadConfig) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """All candidate input files under `uri` (sorted); raises FileNotFoundError if `uri` does not exist."""
    fs, root = open_fs(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri!r} does not exist")
    if info.type != pafs.FileType.Directory:
        if _format_of(root, config) is None:
            raise ValueError(f"cannot tell the format of {uri!r} from its extension; set the input format")
        return fs, posixpath.dirname(root), [info]
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    keep = [
        i
        for i in infos
        if i.type != pafs.FileType.Directory
        and _format_of(i.path, config) is not None
        and not _hidden(posixpath.relpath(i.path, root))
    ]
    return fs, root, sorted(keep, key=lambda i: i.path)


def _hidden(rel: str) -> bool:
    """Paths with a part starting with '.' or '_' (.git/, _SUCCESS, .DS_Store) are not inputs."""
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def read_corpus(
    uri: str, config: ReadConfig = ReadConfig(), run_id: str = ""
) -> tuple[list[Document], list[dict]]:
    """Read every document under `uri`: (documents in read order, `errors` rows for everything bad)."""
    fs, root, files = list_inputs(uri, config)
    docs, errors, seen = [], [], {}
    for info in files:
        for item in read_file(fs, root, info, config):
            if isinstance(item, BadInput):
                errors.append(item.row(run_id))
            elif item.doc_id in seen:
                msg = f"{item.source}: duplicate doc_id {item.doc_id!r} (first read from {seen[item.doc_id]}); skipped"
                errors.append(error_row(item.doc_id, item.source, "read", "DuplicateDocId", msg, run_id))
            else:
                seen[item.doc_id] = item.source
                docs.append(item)
                errors.extend(flag_rows(item, run_id))
    return docs, errors


def flag_rows(doc: Document, run_id: str) -> list[dict]:
    """The `errors` rows of a document's read-time repairs (it is still processed)."""
    msgs = {
        "invalid_utf8": "invalid UTF-8 decoded with U+FFFD replacement characters; document still processed"
    }
    return [
        error_row(doc.doc_id, doc.source, "read", "InvalidUTF8", f"{doc.source}: {msgs[f]}", run_id)
        for f in doc.flags
    ]


def read_file(fs: pafs.FileSystem, root: str, info: pafs.FileInfo, config: ReadConfig) -> Iterator:
    """Yield Documents and BadInputs for one file; a failure of the whole file is one BadInput."""
    rel = posixpath.relpath(info.path, root) if root else info.path
    fmt = _format_of(info.path, config)
    try:
        if info.type != pafs.FileType.File:
            raise BadInput("NotARegularFile", f"not a regular file ({info.type.name})", rel)
        reader = {"text": _read_text_file, "jsonl": _read_jsonl_file, "parquet": _read_parquet_file}[fmt]
        yield from reader(fs, info, rel, config)
    except BadInput as e:
        yield e
    except pa.ArrowInvalid as e:
        yield BadInput(
            "CorruptParquet" if fmt == "parquet" else "CorruptFile", f"cannot parse file: {e}", rel
        )
    except OSError as e:
        yield BadInput("UnreadableFile", f"cannot read file: {e}", rel)
    except Exception as e:  # noqa: BLE001 - whatever else a file does to a reader, the other files still count
        yield BadInput(type(e).__name__, f"cannot read file: {e}", rel)


def _decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 text (a leading BOM dropped); invalid bytes become U+FFFD and the flag is True."""
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors="replace"), True


def make_document(doc_id, text, source: str, config: ReadConfig, title=None, metadata=None) -> Document:
    """Validate one record and return its Document; raise BadInput naming the problem."""
    doc_id = None if doc_id is None else str(doc_id)
    if doc_id is not None and not doc_id.strip():
        raise BadInput("InvalidDocId", "doc id is empty", source)
    flags = ()
    if isinstance(text, bytes):
        if b"\x00" in text:
            raise BadInput("BinaryContent", "binary content (NUL bytes)", source, doc_id)
        text, replaced = _decode(text)
        flags = ("invalid_utf8",) if replaced else ()
    if text is None:
        raise BadInput("NullText", "text is null", source, doc_id)
    if not isinstance(text, str):
        raise BadInput("InvalidText", f"text must be a string, got {type(text).__name__}", source, doc_id)
    if "\x00" in text:
        raise BadInput("BinaryContent", "binary content (NUL characters)", source, doc_id)
    if _SURROGATE.search(text):  # lone surrogates from JSON escapes such as "\ud800" are not valid UTF-8
        text, flags = _SURROGATE.sub("\ufffd", text), ("invalid_utf8",)
    if not text.strip():
        raise BadInput("EmptyDocument", "document is empty or whitespace only", source, doc_id)
    if len(text) > config.max_chars:
        raise BadInput(
            "DocumentTooLong", f"{len(text):,} characters > max_chars={config.max_chars:,}", source, doc_id
        )
    title = None if title is None else str(title)
    return Document(doc_id or source, text, source, title, metadata, flags)


def _read_text_file(fs, info: pafs.FileInfo, rel: str, config: ReadConfig) -> Iterator:
    if info.size is not None and info.size > 4 * config.max_chars:  # more bytes than max_chars can encode
        raise BadInput(
            "DocumentTooLong", f"{info.size:,} bytes > 4 * max_chars={config.max_chars:,}", rel, rel
        )
    with fs.open_input_stream(info.path) as f:
        data = f.read()
    yield make_document(rel, data, rel, config, title=posixpath.splitext(info.base_name)[0])


def _read_jsonl_file(fs, info: pafs.FileInfo, rel: str, config: ReadConfig) -> Iterator:
    with io.BufferedReader(fs.open_input_stream(info.path)) as f:
        for line_no, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    yield _jsonl_record(raw, f"{rel}:{line_no}", config)
                except BadInput as e:
                    yield e


def _jsonl_record(raw: bytes, source: str, config: ReadConfig) -> Document:
    line, replaced = _decode(raw)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadInput("MalformedJSON", f"malformed JSON line: {e}", source) from None
    if not isinstance(record, dict):
        raise BadInput("MalformedJSON", f"line is a JSON {type(record).__name__}, expected an object", source)
    doc_id = record.pop(config.id_column, None)
    if config.text_column not in record:
        raise BadInput("MissingText", f"no {config.text_column!r} field", source, _str_or_none(doc_id))
    text, title = record.pop(config.text_column), record.pop(config.title_column, None)
    metadata = json.dumps(record, sort_keys=True, ensure_ascii=False) if record else None
    doc = make_document(doc_id, text, source, config, title, metadata)
    return Document(doc.doc_id, doc.text, source, doc.title, metadata, ("invalid_utf8",)) if replaced else doc


def _str_or_none(x) -> str | None:
    return None if x is None else str(x)


def _read_parquet_file(fs, info: pafs.FileInfo, rel: str, config: ReadConfig) -> Iterator:
    with fs.open_input_file(info.path) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if config.text_column not in names:
            raise BadInput("MissingTextColumn", f"no column {config.text_column!r} (columns: {names})", rel)
        text_type = pf.schema_arrow.field(config.text_column).type
        if not (
            pa.types.is_string(text_type)
            or pa.types.is_large_string(text_type)
            or pa.types.is_binary(text_type)
            or pa.types.is_large_binary(text_type)
        ):
            raise BadInput("InvalidTextColumn", f"column {config.text_column!r} has type {text_type}", rel)
        columns = [c for c in (config.id_column, config.text_column, config.title_column) if c in names]
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=columns):
            for record in batch.to_pylist():
                source = f"{rel}#{row}"
                row += 1
                try:
                    yield make_document(
                        record.get(config.id_column),
                        record[config.text_column],
                        source,
                        config,
                        record.get(config.title_column),
                    )
                except BadInput as e:
                    yield e
