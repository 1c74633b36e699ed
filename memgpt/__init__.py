"""memgpt: Hugging Face causal LMs with a fixed-size memory for documents of any length."""

from .archival import ArchivalMemory
from .config import MemGPTConfig
from .hub import DEFAULT_MODEL, load_tokenizer
from .kv import KVMemory
from .model import MemGPT, MemGPTOutput
from .retrieval import RetrievalMemory
from .slots import SlotMemory
from .state import MemoryState

__all__ = [
    "DEFAULT_MODEL",
    "MemGPT",
    "MemGPTConfig",
    "MemGPTOutput",
    "MemoryState",
    "SlotMemory",
    "KVMemory",
    "RetrievalMemory",
    "ArchivalMemory",
    "load_tokenizer",
]
