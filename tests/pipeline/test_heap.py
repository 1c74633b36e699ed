"""The driver hands freed memory back to the system: real allocations, real RSS."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.heap import heap_trimmed, trim_heap

STATUS = Path("/proc/self/status")


# in a fresh process: a heap that earlier tests left full of holes may serve the small allocations elsewhere,
# and glibc then gives the blocks back at free() already
_TRIM = """
import json
from pathlib import Path
from pipeline.heap import trim_heap

def anon_mib():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024

# 40 KB objects, as a group of short documents: glibc serves them from its heap, not from mmap
blocks, kept = [], []
for i in range(4000):
    blocks.append(bytes([i % 251]) * 40_000)
    # a live allocation after each block keeps the block's pages off the heap's top
    kept.append(bytes([i % 7]) * 600)
before = anon_mib()
del blocks
freed = anon_mib()
trim_heap()
print(json.dumps([before, freed, anon_mib(), len(kept)]))
"""


@pytest.mark.skipif(not STATUS.exists() or not trim_heap(), reason="needs Linux with glibc")
def test_trim_hands_back_freed_pages_that_lie_between_live_ones():
    root = Path(__file__).parents[2]
    out = subprocess.run([sys.executable, "-c", _TRIM], cwd=root, capture_output=True, text=True, check=True,
                         timeout=120)
    before, freed, after, kept = json.loads(out.stdout)
    assert freed > before - 40  # glibc kept (almost all of) the 160 MB it was given back
    assert after < freed - 100, (before, freed, after)
    assert kept == 4000


def test_heap_trimmed_stops_its_thread():
    with heap_trimmed(every_s=0.01):
        assert any(t.name == "heap-trim" for t in threading.enumerate()) or not trim_heap()
    assert not any(t.name == "heap-trim" for t in threading.enumerate())
