"""Generation options: the keyword arguments of transformers' `generate`, resolved into one GenerationConfig.

MemGPT.generate hands the memory to transformers' own generation loop as the cache the prompt continues from,
so every option transformers offers (processors, stopping criteria, streamers, scores) applies unchanged.
"""

import copy

from transformers import GenerationConfig

DEFAULT_MAX_NEW_TOKENS = 32


def generation_config(
    base: GenerationConfig,
    given: GenerationConfig | None,
    prompt_length: int,
    max_length: int | None,
    options: dict,
) -> GenerationConfig:
    """`given` (or the backbone's own `base`) updated with `options`; lengths count the whole prompt.

    The loop sees only the prompt's last chunk (the rest is in memory), so `max_length` becomes new tokens
    here (a negative `eos_token_id` never stops, as in transformers)."""
    config = copy.deepcopy(given if given is not None else base)
    unknown = config.update(**options)
    if unknown:
        raise TypeError(f"generate got unexpected options: {sorted(unknown)}")
    if max_length is not None and options.get("max_new_tokens") is None:
        config.max_new_tokens = max(0, max_length - prompt_length)
    elif config.max_new_tokens is None:
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    return config
