"""The models the jobs know by name, where each loads from, and the settings each runs with by default."""

from collections.abc import Callable

from .hub import DEFAULT_MODEL

# The default for real text: an instruct model that knows English, loaded from its offline copy (memgpt.offline)
TEXT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEXT_MODEL_SETTINGS = {"memory": "kv", "chunk_size": 512, "kv_budget": 1024}  # what its settings default to
# The shipped model of the synthetic stories (jobs.quickstart's corpus); it knows nothing else
STORY_MODEL = "memgpt-small"
RANDOM_MODEL = "random"  # a random-init MemGPT of the default config (for trying things)


def model_path(name: str | None, progress: Callable[[str], None] | None = None) -> str:
    """Where the model a job names loads from: None is the offline copy of TEXT_MODEL (made once per machine,
    then a file check), STORY_MODEL the shipped folder; anything else (a folder, hub id or GGUF file) as given."""
    if name is None:
        from .offline import ensure_smollm2

        return str(ensure_smollm2(progress=progress))
    if name == STORY_MODEL:
        return str(DEFAULT_MODEL)
    return name


def model_settings(name: str | None, **given) -> dict:
    """The memory settings given (those not None), over TEXT_MODEL's own when no model is named."""
    base = dict(TEXT_MODEL_SETTINGS) if name is None else {}
    return base | {k: v for k, v in given.items() if v is not None}
