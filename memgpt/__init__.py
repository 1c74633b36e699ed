"""memgpt: Hugging Face causal LMs with a fixed-size memory for documents of any length."""

# the built-in memories register themselves on import (memgpt/memory.py), in this order
from . import slots, gist, kv, retrieval, archival  # noqa: F401  # isort: skip
from .archival import ArchivalMemory
from .config import MemGPTConfig
from .hub import DEFAULT_MODEL, load_tokenizer
from .kv import KVMemory
from .memory import Memory, MemoryKind, memory_kind, memory_names, register_memory
from .model import ChunkCache, MemGPT, MemGPTOutput
from .retrieval import RetrievalMemory
from .slots import SlotMemory
from .state import MemoryState

__all__ = [
    "DEFAULT_MODEL",
    "MemGPT",
    "MemGPTConfig",
    "MemGPTOutput",
    "ChunkCache",
    "MemoryState",
    "Memory",
    "MemoryKind",
    "register_memory",
    "memory_kind",
    "memory_names",
    "SlotMemory",
    "KVMemory",
    "RetrievalMemory",
    "ArchivalMemory",
    "load_tokenizer",
]
