"""Writing the tables: one folder per table under the output (local or any pyarrow.fs URI, S3 included), one
Parquet file per finished unit, each committed atomically (docs/pipeline.md says how, on S3 too)."""

import json
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.io import open_fs, safe_name
from pipeline.schemas import ERRORS, TABLES, to_table

READ_SLICE = 256  # files read as one dataset (their metadata held at once)


class Output:
    """The output location: one folder per table, one Parquet file per finished unit, committed atomically."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = open_fs(uri)

    def path(self, table: str, name: str = "") -> str:
        return posixpath.join(self.root, table, f"{name}.parquet" if name else "")

    def check_writable(self) -> None:
        """Create the root and prove it is writable; raise PermissionError/OSError naming the path if not."""
        probe = posixpath.join(self.root, f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as e:
            raise PermissionError(f"output {self.uri!r} is not writable: {e}") from None

    def write(self, table: str, name: str, data: pa.Table) -> str:
        """Write `data` as <root>/<table>/<name>.parquet: to a hidden temp file, then rename (atomic commit)."""
        if not data.schema.equals(TABLES[table]):
            raise ValueError(f"{table} table has schema {data.schema}, expected {TABLES[table]}")
        if name != safe_name(name):
            raise ValueError(f"unsafe output name {name!r}; use safe_name()")
        with self._commit(self.path(table, name)) as f:
            pq.write_table(data, f)
        return self.path(table, name)

    def write_parts(self, table: str, name: str, parts: Iterable[pa.Table]) -> int:
        """Write `parts` one after the other as the one file <root>/<table>/<name>.parquet, each a row group or
        more, committed atomically once all are written; the rows written. Holds one part at a time."""
        if name != safe_name(name):
            raise ValueError(f"unsafe output name {name!r}; use safe_name()")
        rows = 0
        with self._commit(self.path(table, name)) as f, pq.ParquetWriter(f, TABLES[table]) as writer:
            for data in parts:
                if not data.schema.equals(TABLES[table]):
                    raise ValueError(f"{table} table has schema {data.schema}, expected {TABLES[table]}")
                writer.write_table(data)
                rows += data.num_rows
        return rows

    def write_json(self, name: str, obj) -> str:
        """Write `obj` as <root>/<name>.json, atomically."""
        path = posixpath.join(self.root, f"{name}.json")
        with self._commit(path) as f:
            f.write(json.dumps(obj, indent=2).encode())
        return path

    @contextmanager
    def _commit(self, path: str):
        """Yield a stream to a hidden temp file beside `path`, renamed to `path` once it is complete."""
        folder, base = posixpath.split(path)
        self.fs.create_dir(folder, recursive=True)
        tmp = posixpath.join(folder, f".tmp-{base}-{uuid.uuid4().hex}")  # '.' hides it from readers
        try:
            with self.fs.open_output_stream(tmp) as f:
                yield f
            self.fs.move(tmp, path)
        except BaseException:
            _delete_quietly(self.fs, tmp)
            raise

    def delete(self, table: str, name: str) -> None:
        """Remove a committed unit if it exists."""
        _delete_quietly(self.fs, self.path(table, name))

    def names(self, table: str) -> list[str]:
        """Names of the committed units of `table` (sorted)."""
        sel = pafs.FileSelector(self.path(table), allow_not_found=True)
        files = [i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File]
        return sorted(
            f[: -len(".parquet")] for f in files if f.endswith(".parquet") and not f.startswith((".", "_"))
        )

    def read_unit(self, table: str, name: str) -> pa.Table | None:
        """One committed unit of `table`, or None if it does not exist."""
        path = self.path(table, name)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_file(path) as f:
            return pq.read_table(f)

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """The whole table (all committed units, in file-name order); empty with the schema if none."""
        schema = TABLES[table] if columns is None else pa.schema([TABLES[table].field(c) for c in columns])
        parts = list(self.read_slices(table, columns))
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def read_slices(
        self, table: str, columns: list[str] | None = None, files: int | None = None
    ) -> Iterator[pa.Table]:
        """The table `files` (default READ_SLICE) committed units at a time, in file-name order: each unit whole
        in one slice."""
        for ds in self._slices(table, files):
            yield ds.to_table(columns=columns).combine_chunks()

    def num_rows(self, table: str) -> int:
        """Rows in the whole table, from the files' metadata."""
        return sum(ds.count_rows() for ds in self._slices(table))

    def _slices(self, table: str, files: int | None = None) -> Iterator[pads.Dataset]:
        """The table's units as datasets of at most `files` files each: a dataset keeps every file's metadata
        until it is read whole (~32 KB a file, 325 MB for a table of 10,000 documents' units)."""
        paths, files = [self.path(table, n) for n in self.names(table)], files or READ_SLICE
        for i in range(0, len(paths), files):
            yield pads.dataset(
                paths[i : i + files], schema=TABLES[table], filesystem=self.fs, format="parquet"
            )

    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write `data` as <root>/<relpath>, atomically (temp file, then rename)."""
        path = posixpath.join(self.root, relpath)
        with self._commit(path) as f:
            f.write(data)
        return path

    def read_bytes(self, relpath: str) -> bytes:
        with self.fs.open_input_stream(posixpath.join(self.root, relpath)) as f:
            return f.read()

    def files(self, folder: str) -> list[str]:
        """Base names of the committed files in <root>/<folder> (hidden temp files excluded), sorted."""
        sel = pafs.FileSelector(posixpath.join(self.root, folder), allow_not_found=True)
        infos = self.fs.get_file_info(sel)
        return sorted(
            i.base_name for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(".")
        )

    def dirs(self, folder: str) -> list[str]:
        """Names of the sub-folders of <root>/<folder>, sorted."""
        sel = pafs.FileSelector(posixpath.join(self.root, folder), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.Directory)

    def delete_file(self, relpath: str) -> None:
        _delete_quietly(self.fs, posixpath.join(self.root, relpath))

    def delete_dir(self, relpath: str) -> None:
        """Remove <root>/<relpath> and everything in it, if it exists."""
        try:
            self.fs.delete_dir(posixpath.join(self.root, relpath))
        except (OSError, FileNotFoundError):
            pass

    def remove_temp_files(self) -> int:
        """Delete the hidden `.tmp-*` files a killed writer left behind (readers never saw them); their count.

        Only for a run that owns this output: a live writer's temp files would be removed too."""
        sel = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        stale = [
            i.path
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File and i.base_name.startswith(".tmp-")
        ]
        for path in stale:
            _delete_quietly(self.fs, path)
        return len(stale)

    def write_errors(self, name: str, rows: list[dict]) -> str | None:
        """Write `errors` rows as one unit, replacing an earlier one; none (and no file) when there are none."""
        if not rows:
            self.delete("errors", name)
            return None
        return self.write("errors", name, to_table(rows, ERRORS))


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:
        pass
