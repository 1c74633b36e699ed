"""Mid-document checkpoints: the memory state of a lockstep group, saved every K chunks, so that a retried read
resumes from the last checkpoint instead of chunk 0.

Layout: `<output>/_checkpoints/<group key>/chunk-<NNNNNN>.safetensors` (the MemoryState, safetensors) and
`chunk-<NNNNNN>.json` (progress: run id, doc ids, facts so far, counts). Both are written atomically (temp file,
then rename) and the JSON is written second, so a checkpoint exists only once both are complete. Older
checkpoints of the group are removed after a newer one is complete; the folder is removed when the group's
documents are committed. `_checkpoints` starts with `_`, so Parquet readers of the output never look inside.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
from typing import TYPE_CHECKING

from pipeline.output import Output

if TYPE_CHECKING:  # the write stage imports this module: keep torch out of its worker processes
    import torch

    from memgpt import MemoryState

FOLDER = "_checkpoints"


def group_key(doc_ids: list[str]) -> str:
    """The checkpoint folder name of a lockstep group: depends on its documents (in order) only."""
    digest = hashlib.sha256("\0".join(doc_ids).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"group-{len(doc_ids)}-{digest}"


class Checkpoints:
    """Save, find and remove the checkpoints of lockstep groups under `output`."""

    def __init__(self, output: str):
        self.out = Output(output)

    def save(self, key: str, next_chunk: int, state: MemoryState, progress: dict) -> None:
        """Checkpoint `state` (chunks 0..next_chunk-1 read) with `progress`; then drop older checkpoints."""
        name = posixpath.join(FOLDER, key, f"chunk-{next_chunk:06d}")
        fd, tmp = tempfile.mkstemp(suffix=".safetensors")
        os.close(fd)
        try:
            state.save(tmp)
            with open(tmp, "rb") as f:
                self.out.write_bytes(name + ".safetensors", f.read())
        finally:
            os.unlink(tmp)
        self.out.write_bytes(name + ".json", json.dumps(progress | {"next_chunk": next_chunk}).encode())
        for old in self._chunks(key)[:-1]:  # keep only the newest complete checkpoint
            for ext in (".json", ".safetensors"):
                self.out.delete_file(posixpath.join(FOLDER, key, f"chunk-{old:06d}{ext}"))

    def load(self, key: str, device: torch.device | str = "cpu") -> tuple[MemoryState, dict] | None:
        """The newest complete checkpoint of `key` (state, progress), or None."""
        chunks = self._chunks(key)
        if not chunks:
            return None
        name = posixpath.join(FOLDER, key, f"chunk-{chunks[-1]:06d}")
        progress = json.loads(self.out.read_bytes(name + ".json"))
        from memgpt import MemoryState

        fd, tmp = tempfile.mkstemp(suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.out.read_bytes(name + ".safetensors"))
            state = MemoryState.load(tmp, device=device)
        finally:
            os.unlink(tmp)
        return state, progress

    def keys(self) -> list[str]:
        """The groups that have a checkpoint folder."""
        return self.out.dirs(FOLDER)

    def delete(self, key: str) -> None:
        self.out.delete_dir(posixpath.join(FOLDER, key))

    def delete_all(self) -> None:
        self.out.delete_dir(FOLDER)

    def _chunks(self, key: str) -> list[int]:
        names = self.out.files(posixpath.join(FOLDER, key))
        return sorted(
            int(n[len("chunk-") : -len(".json")])
            for n in names
            if n.startswith("chunk-") and n.endswith(".json")
        )
