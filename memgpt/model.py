"""MemGPT: a Hugging Face causal LM plus a fixed-size memory that reads long documents chunk by chunk."""

from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer
from transformers.generation.utils import GenerateDecoderOnlyOutput

from . import hub, loading, lora
from .attention import use_grouped_sdpa
from .cache import reserved_cache
from .config import MemGPTConfig
from .generation import generation_config as generation_config_for
from .kv import SCORING_ATTENTION, scoring_entries
from .layout import column_major_linears
from .memory import BackboneInputs, memory_kind
from .padding import TokenRows, left_pad, right_pad, rows_of
from .state import MemoryState


class Reply(NamedTuple):
    text: str  # special tokens skipped
    ids: list[int]  # the tokens generated before the end of turn


@dataclass
class MemGPTOutput:
    logits: torch.Tensor | None  # (B, T, V) over the chunk's tokens
    loss: torch.Tensor | None
    memory: MemoryState  # the state after reading the chunk


@dataclass
class ChunkCache:
    """The backbone's cache right after a chunk was read: the memory before it, then the chunk. A generation
    continues from it (`memgpt.lookup.continue_generate`), so the chunk goes through the backbone once for both
    the memory's write and what is generated about it."""

    cache: object  # a transformers Cache: (A, H, S + P, Dh) per layer
    attention_mask: torch.Tensor  # (A, S + P): the memory's entries, the chunk; what follows it masked out
    next_position: torch.Tensor  # (A,) the position after each row's last chunk token
    rows: torch.Tensor  # (A,) the batch rows that read a chunk (a finished document's row reads none)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MemGPT(nn.Module):
    def __init__(
        self,
        config: MemGPTConfig | None = None,
        backbone: PreTrainedModel | None = None,
        tokenizer=None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        """`MemGPT()` is a small random model; pass a backbone to wrap a loaded HF model."""
        super().__init__()
        self.config = config = config or MemGPTConfig()
        if backbone is None:
            if not isinstance(config.backbone, dict):
                raise ValueError("a backbone given by name is loaded with MemGPT.from_pretrained(name)")
            backbone = hub.backbone_from_config(config.backbone)
        self.backbone = backbone
        self.tokenizer = tokenizer if tokenizer is not None else _default_tokenizer(config)
        self.memory = build_memory(config, backbone, self.tokenizer)
        self._signature: dict | None = None
        if self.memory.needs_attentions:  # SDPA plus the attention weights of a window of queries
            backbone.set_attn_implementation(SCORING_ATTENTION)
        else:
            use_grouped_sdpa(backbone)
        device = torch.device(device) if device is not None else default_device()
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.to(device=device, dtype=dtype)
        # a backbone referenced by name is saved by name only while its weights are the named model's
        named = isinstance(config.backbone, str) and not config.backbone.startswith("./")
        self.base_fingerprint = lora.fingerprint(backbone) if named else {}

    # ---- construction, saving, loading -------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls, backbone: PreTrainedModel, memory: str = "kv", tokenizer=None, **options
    ) -> "MemGPT":
        """Wrap an already loaded HF causal LM; the backbone is referenced by its name_or_path."""
        name = getattr(backbone.config, "name_or_path", "") or None
        config = MemGPTConfig(backbone=name or backbone.config.to_dict(), memory=memory, **options)
        param = next(backbone.parameters())
        return cls(config, backbone, tokenizer, device=param.device, dtype=param.dtype)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
        **options,
    ) -> "MemGPT":
        """A saved MemGPT folder, or any HF causal LM (local or hub id), wrapped with kv memory by default.

        A GGUF file (`"model.gguf"`, or a folder plus `gguf_file=`) is dequantized into a plain backbone."""
        return loading.load(cls, name_or_path, device, dtype, trust_remote_code, gguf_file, **options)

    def save_pretrained(self, directory: str | Path, save_backbone: bool | None = None) -> None:
        """config.json + memory.safetensors (+ backbone/ when it is not a named pretrained model) + tokenizer."""
        loading.save(self, directory, save_backbone)

    def train(self, mode: bool = True) -> "MemGPT":
        """nn.Module's train/eval; in eval mode on a CPU the backbone's linear weights are stored column-major,
        where generation's products of a few rows run up to 3x faster (memgpt/layout.py)."""
        super().train(mode)
        column_major_linears(self.backbone, on=not mode and self.device.type == "cpu")
        return self

    # ---- properties ---------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        return hub.backbone_shapes(self.backbone.config)["hidden_size"]

    @property
    def name(self) -> str:
        b = self.config.backbone
        return b if isinstance(b, str) else f"{b.get('model_type', 'custom')}-from-config"

    def signature(self) -> dict:
        """What a memory state must agree with to be read by this model."""
        if self._signature is None:
            shapes = hub.backbone_shapes(self.backbone.config)
            sig = {"kind": self.config.memory, "model_type": self.backbone.config.model_type, **shapes}
            self._signature = sig | memory_kind(self.config.memory).signature(self.config)
        return dict(self._signature)

    def check_state(self, state: MemoryState) -> None:
        if state.signature is not self._signature and state.signature != self.signature():
            raise ValueError(
                f"memory state does not fit this model: state is {state.signature}, model is {self.signature()}"
            )

    # ---- reading: M_t = f(M_{t-1}, x_t, h_t) --------------------------------------------------------------

    def init_state(self, batch_size: int) -> MemoryState:
        """M_0 for `batch_size` documents."""
        tensors = self.memory.init(batch_size, self.device, self.dtype)
        self.signature()
        return MemoryState(self.config.memory, tensors, self._signature)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: MemoryState | None = None,
        labels: torch.Tensor | None = None,
        return_logits: bool = True,
    ) -> MemGPTOutput:
        """Read one chunk per document (B, T), right-padded: logits with the memory so far, and the new memory.

        Rows whose mask is all zero keep their state unchanged (documents that already ended).
        """
        input_ids, mask, state = self._chunk_inputs(input_ids, attention_mask, memory)
        active = mask.any(-1)
        if not active.all():
            idx = active.nonzero().squeeze(-1)
            sub = self.forward(input_ids[idx], mask[idx], state.select(idx), None, return_logits)
            logits = None
            if sub.logits is not None:
                logits = sub.logits.new_zeros(input_ids.shape + sub.logits.shape[-1:]).index_copy(
                    0, idx, sub.logits
                )
            return MemGPTOutput(logits, _lm_loss(logits, labels, mask), state.scatter(idx, sub.memory))
        new_state, inputs, hidden = self._write(state, input_ids, mask)
        logits = self.backbone.get_output_embeddings()(hidden[:, inputs.text]) if return_logits else None
        return MemGPTOutput(logits, _lm_loss(logits, labels, mask), new_state)

    def _chunk_inputs(
        self, input_ids, attention_mask, memory
    ) -> tuple[torch.Tensor, torch.Tensor, MemoryState]:
        """The chunk's ids and mask on the model's device, and the memory it is read with (M_0 when None)."""
        input_ids = input_ids.to(self.device)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(self.device).long()
        state = self.init_state(input_ids.shape[0]) if memory is None else memory.to(self.device)
        self.check_state(state)
        return input_ids, mask, state

    def _write(
        self, state: MemoryState, input_ids: torch.Tensor, mask: torch.Tensor, keep_cache: bool = False
    ):
        """M_t from one chunk per document, every row reading: the new state, the backbone call's inputs (with
        its cache, filled, when `keep_cache`) and its hidden states (B, P, D)."""
        embeds = self.backbone.get_input_embeddings()(input_ids)  # (B, T, D)
        inputs = self.memory.read_inputs(state.tensors, embeds, mask, write=True, input_ids=input_ids)
        if keep_cache and (inputs.attending is not None or inputs.logits_processor is not None):
            raise ValueError(f"{self.config.memory} memory reads through a hook: no cache to continue from")
        if keep_cache and inputs.cache is None:  # slots: the backbone fills one
            inputs = replace(inputs, cache=reserved_cache())
        out = self._backbone(inputs, use_cache=inputs.cache is not None)
        hidden = out.last_hidden_state  # (B, P, D)
        tensors = self.memory.update(state.tensors, inputs, hidden, mask, out.attentions)
        return MemoryState(state.kind, tensors, state.signature), inputs, hidden

    def step(
        self, state: MemoryState, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> MemoryState:
        """Update the memory with one chunk per document (B, T), right-padded."""
        return self.forward(input_ids, attention_mask, memory=state, return_logits=False).memory

    @torch.no_grad()
    def step_keeping_cache(
        self, state: MemoryState, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[MemoryState, ChunkCache]:
        """`step`, and the backbone's cache after the chunk, to generate from before the memory moves on.

        The same new state as `step`. Memories that read through a hook of their own or shape the logits
        (retrieval, archival) leave nothing a generation could continue from: ValueError."""
        input_ids, mask, state = self._chunk_inputs(input_ids, attention_mask, state)
        rows = mask.any(-1).nonzero().squeeze(-1)  # (A,)
        everyone = len(rows) == len(mask)
        mask = mask[rows]
        new, inputs, _ = self._write(state if everyone else state.select(rows), input_ids[rows], mask, True)
        new = new if everyone else state.scatter(rows, new)
        text_positions = inputs.position_ids[:, inputs.text]  # (A, T)
        next_position = text_positions.gather(1, mask.sum(-1, keepdim=True) - 1).squeeze(1) + 1
        attention = inputs.attention_mask.clone()  # (A, S + P)
        cached = attention.shape[1] - inputs.inputs_embeds.shape[1]  # S: entries the memory held before
        attention[:, cached + inputs.text.stop :] = 0  # what the memory adds after the chunk (write slots)
        return new, ChunkCache(inputs.cache, attention, next_position, rows)

    def read(
        self,
        documents: torch.Tensor | list[torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        memory: MemoryState | None = None,
        progress: bool = False,
    ) -> MemoryState:
        """Read a batch of documents of different lengths chunk by chunk, in lockstep, into memory.

        `documents`: a list of 1-D token tensors, or a (B, T) tensor whose padding `attention_mask` marks.
        Gradients flow through at most `config.bptt_depth` chunks (truncated BPTT).
        """
        docs = rows_of(documents, attention_mask)
        state = self.init_state(len(docs)) if memory is None else memory
        C = self.config.chunk_size
        n_chunks = max((len(d) + C - 1) // C for d in docs) if docs else 0
        ids, mask = right_pad(docs, self.tokenizer_pad_id, n_chunks * C)  # (B, N*C)
        ids, mask = ids.view(len(docs), n_chunks, C), mask.view(len(docs), n_chunks, C)
        for t in tqdm(range(n_chunks), desc="reading", unit="chunk", disable=not progress):
            width = int(mask[:, t].sum(-1).max())  # trim padding the length mix does not force
            state = self.step(state, ids[:, t, :width], mask[:, t, :width])
            if torch.is_grad_enabled() and (t + 1) % self.config.bptt_depth == 0:
                state = state.detach()
        return state

    def _backbone(self, inputs, use_cache: bool, output_attentions: bool | None = None):
        if output_attentions is None:  # reading: kv memory scores its entries by the attention they receive
            output_attentions = self.memory.needs_attentions
        with scoring_entries() if output_attentions else nullcontext(), inputs.attending or nullcontext():
            return self.backbone.base_model(
                inputs_embeds=inputs.inputs_embeds,
                attention_mask=inputs.attention_mask,
                position_ids=inputs.position_ids,
                cache=inputs.cache,
                use_cache=use_cache,
                output_attentions=output_attentions,
            )

    @property
    def tokenizer_pad_id(self) -> int:
        tok = self.tokenizer
        pad = (
            None if tok is None else (tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        )
        return 0 if pad is None else int(pad)

    # ---- generating: the backbone reads c_t = g(M_t, q_t) while it writes ----------------------------------

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: MemoryState | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        stopping_criteria: StoppingCriteriaList | None = None,
        streamer: BaseStreamer | None = None,
        max_length: int | None = None,
        seed: int | None = None,
        **options,
    ) -> torch.Tensor | GenerateDecoderOnlyOutput:
        """Continue left-padded prompts (B, T) from `memory`: (B, T + new), like transformers' `generate`.

        A prompt longer than one chunk is read into memory first, all but its last (partial) chunk; the rest
        runs through transformers' own loop with the memory as the cache it continues from, so its options
        apply (`do_sample`, `repetition_penalty`, `logits_processor`, `streamer`, `return_dict_in_generate`,
        ...). Processors see the prompt's last chunk, not the tokens already read into memory. Defaults are the
        backbone's `generation_config`; `seed` makes sampling repeatable."""
        prompt = input_ids if input_ids.dim() == 2 else input_ids.unsqueeze(0)
        if options.get("pad_token_id") is None:
            options["pad_token_id"] = self._pad_for_generate(options.get("eos_token_id"))
        config = generation_config_for(
            self.backbone.generation_config, generation_config, prompt.shape[1], max_length, options
        )
        state, tail_ids, tail_mask = self._read_prompt(prompt, attention_mask, memory, config.pad_token_id)
        if config.max_new_tokens == 0:
            return prompt.to(self.device)

        embeds = self.backbone.get_input_embeddings()(tail_ids)
        inputs = self.memory.read_inputs(state.tensors, embeds, tail_mask, write=False, input_ids=tail_ids)
        cache = inputs.cache if inputs.cache is not None else reserved_cache()
        prefix = inputs.text.start  # positions a memory adds before the prompt (slots): into the cache first
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with inputs.attending or nullcontext(), rng if seed is not None else nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            if prefix:
                self._read_prefix(inputs, prefix, tail_ids.shape[1], cache)
            out = self.backbone.generate(
                input_ids=tail_ids,
                attention_mask=inputs.attention_mask,  # (B, memory + T): longer than the ids, so none is skipped
                position_ids=inputs.position_ids[:, inputs.text],
                cache=cache,
                generation_config=config,
                logits_processor=_with(logits_processor, inputs.logits_processor),
                stopping_criteria=stopping_criteria,
                streamer=streamer,
            )
        sequences = out.sequences if isinstance(out, GenerateDecoderOnlyOutput) else out
        sequences = torch.cat([prompt.to(self.device), sequences[:, tail_ids.shape[1] :]], dim=1)
        if isinstance(out, GenerateDecoderOnlyOutput):
            out.sequences = sequences
            return out
        return sequences

    def _read_prefix(self, inputs: BackboneInputs, prefix: int, prompt_len: int, cache) -> None:
        """What a memory puts before the prompt (slots), read into the cache the prompt continues from."""
        self.backbone.base_model(
            inputs_embeds=inputs.inputs_embeds[:, :prefix],
            # the cached entries' columns, then the prefix's: every column but the prompt's
            attention_mask=inputs.attention_mask[:, :-prompt_len],
            position_ids=inputs.position_ids[:, :prefix],
            cache=cache,
            use_cache=True,
        )

    def _read_prompt(self, prompt: torch.Tensor, mask: torch.Tensor | None, memory: MemoryState | None,
                     pad: int) -> tuple[MemoryState, torch.Tensor, torch.Tensor]:  # fmt: skip
        """The prompts' whole chunks read into memory (1..C tokens of each stay visible), and the rest left-padded."""
        rows = rows_of(prompt, mask)
        if any(len(r) == 0 for r in rows):
            raise ValueError("generate needs at least one prompt token per row")
        C = self.config.chunk_size
        split = [(len(r) - 1) // C * C for r in rows]
        state = self.init_state(len(rows)) if memory is None else memory.to(self.device)
        if any(split):
            state = self.read([r[:s] for r, s in zip(rows, split, strict=True)], memory=state)
        self.check_state(state)
        tail_ids, tail_mask = left_pad([r[s:] for r, s in zip(rows, split, strict=True)], pad)
        return state, tail_ids.to(self.device), tail_mask.to(self.device)

    @torch.no_grad()
    def reply(self, prompts: TokenRows, memory: MemoryState | None = None, **options) -> list[Reply]:
        """Each prompt's continuation from `memory`, up to its end of turn: the text and the tokens generated.

        Greedy unless `do_sample=True`; every other option goes to `generate` (`max_new_tokens`,
        `logits_processor`, `streamer`, ...). The end of turn is the tokenizer's EOS, or `eos_token_id`."""
        options.setdefault("do_sample", False)
        options.setdefault("pad_token_id", self._pad_for_generate(options.get("eos_token_id")))
        ids, mask = left_pad(prompts, options["pad_token_id"])
        out = self.generate(ids, attention_mask=mask, memory=memory, **options)
        sequences = out.sequences if isinstance(out, GenerateDecoderOnlyOutput) else out
        return self.replies(
            sequences[:, ids.shape[1] :].tolist(), self._end_of_turn(options.get("eos_token_id"))
        )

    def replies(self, rows: list[list[int]], stops: set[int] | None = None) -> list[Reply]:
        """Generated token rows as replies: each cut before its first end-of-turn token (`stops`, by default
        `end_of_turn`), and decoded."""
        stops = self.end_of_turn if stops is None else stops
        cut = [row[: next((i for i, t in enumerate(row) if t in stops), len(row))] for row in rows]
        return [Reply(self.tokenizer.decode(row, skip_special_tokens=True), row) for row in cut]

    @property
    def end_of_turn(self) -> set[int]:
        """The token ids that end a reply by default."""
        return self._end_of_turn(None)

    def _end_of_turn(self, eos: int | list[int] | None) -> set[int]:
        if eos is None:
            eos = getattr(self.backbone.generation_config, "eos_token_id", None)
            mine = self._eos_id()
            return {
                *([] if eos is None else eos if isinstance(eos, list) else [eos]),
                *([] if mine is None else [mine]),
            }
        return set(eos) if isinstance(eos, list) else {eos}

    def _pad_for_generate(self, eos: int | list[int] | None) -> int:
        """The pad id of finished rows: the tokenizer's, else the EOS (as transformers falls back to)."""
        if self.tokenizer is not None and self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        eos = self._eos_id() if eos is None else eos
        eos = eos[0] if isinstance(eos, list) else eos
        return self.tokenizer_pad_id if eos is None or eos < 0 else int(eos)

    def _eos_id(self) -> int | None:
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            return int(self.tokenizer.eos_token_id)
        eos = getattr(self.backbone.generation_config, "eos_token_id", None)
        return eos[0] if isinstance(eos, list) else eos


def build_memory(config: MemGPTConfig, backbone: PreTrainedModel, tokenizer=None) -> nn.Module:
    """The memory `config.memory` names, built by its registered kind (memgpt/memory.py)."""
    return memory_kind(config.memory).build(config, backbone, tokenizer)


def _default_tokenizer(config: MemGPTConfig):
    if config.tokenizer is not None:
        return hub.load_tokenizer(config.tokenizer)
    if isinstance(config.backbone, dict):
        return hub.load_tokenizer()
    return None


def _lm_loss(
    logits: torch.Tensor | None, labels: torch.Tensor | None, mask: torch.Tensor
) -> torch.Tensor | None:
    """Next-token cross-entropy within the chunk, ignoring padding and labels set to -100."""
    if logits is None or labels is None:
        return None
    labels = labels.to(logits.device).masked_fill(mask == 0, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def _with(processors: LogitsProcessorList | None, mine: LogitsProcessor | None) -> LogitsProcessorList | None:
    """The caller's logits processors, then the memory's own (if it has one)."""
    if mine is None:
        return processors
    return LogitsProcessorList([*(processors or []), mine])
