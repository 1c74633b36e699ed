"""The driver's heap over a long run: memory the driver has freed goes back to the system while the job runs.

Ray hands the driver every small object (under its 100 KB inline limit) that the driver owns: here the groups of
short documents on their way to the actors and the actors' results on their way to the sink. glibc keeps the
pages those objects freed, as they lie between live allocations where its own trim (at the heap's top) never
reaches, so they stay in the driver's RSS (measured on a model-free repro, docs/performance.md 5b).
`malloc_trim(0)` hands them back.
"""

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

TRIM_EVERY_S = 5.0  # a trim walks the heap in a few ms


@functools.cache  # find_library runs `ldconfig -p`: once per process is enough
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Hand the pages of freed memory back to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def release_memory() -> None:
    """Hand back what the process freed in both allocators: Arrow's pool and glibc keep freed pages. The entity
    roll-up calls it after each slice and part: without it the driver's RSS grew by the slices read (400,000
    facts: 541 MiB against 524 at the peak)."""
    pa.default_memory_pool().release_unused()
    trim_heap()


@contextmanager
def heap_trimmed(every_s: float = TRIM_EVERY_S) -> Iterator[None]:
    """Trim the heap every `every_s` seconds while the block runs (a no-op where the C library cannot)."""
    trim = _malloc_trim()
    if trim is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            trim(0)

    thread = threading.Thread(target=loop, name="heap-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        trim(0)
