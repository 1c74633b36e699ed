"""What a job prints while it runs: a line per finished document, and Ray's own messages only from warnings up.

Ray logs at INFO level by default, and Ray Data, on a terminal that is not interactive (a pipe, a CI log, a
notebook cell), logs the state of every operator every few seconds: about a hundred lines for one document.
`quiet_ray` keeps those in Ray's log files (`/tmp/ray/session_*/logs/`) and off the console; `--verbose`
leaves Ray as it is. `DocumentProgress` prints the line per document instead.
"""

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.output import Output

# set before ray is imported: the level of the "ray" logger that `ray.init` sets up ("Started a local Ray
# instance." and the like are INFO); a value the user exported wins
RAY_LOGGER_LEVEL = "RAY_LOGGER_LEVEL"
# Ray Data warns once that its progress bars are off; they are off on purpose here
PROGRESS_BARS_OFF_WARNING = "ray_data_progress_manager_disabled"


def quiet_ray(verbose: bool) -> None:
    """Ray's console output from WARNING up and no Ray Data progress bars or progress logging, unless
    `verbose`. Call before ray is imported (the level of Ray's own logger is read at import)."""
    if verbose:
        return
    os.environ.setdefault(RAY_LOGGER_LEVEL, "warning")
    import ray.data  # imported here, after the variable: it configures Ray's loggers
    from ray.util.debug import log_once

    ray.data.DataContext.get_current().enable_progress_bars = False
    log_once(PROGRESS_BARS_OFF_WARNING)  # marks the warning as given
    for handler in logging.getLogger("ray.data").handlers:
        if _is_console(handler):  # the file handler keeps everything, for `ray logs` and debugging
            handler.setLevel(logging.WARNING)
    # a one-file corpus reads in one task: Ray Data's advice to raise its read concurrency is noise here
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class DocumentProgress:
    """Prints a line for each document the run commits, as it is committed.

    Documents are committed by Ray tasks, whose output does not reach this process, so a thread watches the
    output's manifest folder (a file per document, written last, atomically) and prints a line for each file
    that is new or rewritten since the start: a resumed run reports only what it does itself."""

    def __init__(self, output: str, stream: TextIO | None = None, every_s: float = 2.0):
        self.out, self.stream, self.every_s = Output(output), stream or sys.stderr, every_s
        self.seen: dict[str, int | None] = {}
        _quietly(self._remember)  # an output that cannot be listed is the run's to report, not this one's
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="document-progress", daemon=True)

    def __enter__(self) -> "DocumentProgress":
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            self.poll()  # the last documents, before the report

    def poll(self) -> None:
        """Print a line for each manifest file written since the last poll."""
        for name, mtime in sorted(self._files().items()):
            if self.seen.get(name) != mtime:
                self._print(name)
                self.seen[name] = mtime

    def _remember(self) -> None:
        self.seen = self._files()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            _quietly(self.poll)  # a file that cannot be read yet is read at the next poll

    def _files(self) -> dict[str, int | None]:
        """name -> modification time (ns) of each committed manifest file."""
        selector = pafs.FileSelector(self.out.path("manifest"), allow_not_found=True)
        return {
            i.base_name.removesuffix(".parquet"): i.mtime_ns
            for i in self.out.fs.get_file_info(selector)
            if i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_"))  # not temp files
        }

    def _print(self, name: str) -> None:
        with self.out.fs.open_input_file(self.out.path("manifest", name)) as f:
            rows = pq.read_table(f).to_pylist()
        for row in rows:
            self.done += 1
            print(f"[{self.done}] {document_line(row)}", file=self.stream, flush=True)


def document_line(row: dict) -> str:
    """One manifest row as a line: `README.md: 2,164 tokens in 96.2s` or `x.txt: failed: ValueError: ...`."""
    if row["status"] == "ok":
        return f"{row['doc_id']}: {row['n_tokens']:,} tokens in {row['seconds']:.1f}s"
    return f"{row['doc_id']}: failed: {row['error']}"


def _quietly(poll: Callable[[], None]) -> None:
    try:
        poll()
    except (OSError, pa.ArrowException):  # a file renamed or removed between the listing and the read
        pass
