"""MemGPT: a Hugging Face causal LM plus a fixed-size memory that reads long documents chunk by chunk."""

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer
from transformers.generation.utils import GenerateDecoderOnlyOutput

from . import hub
from .archival import ArchivalMemory
from .cache import reserved_cache
from .config import CONFIG_NAME, MemGPTConfig
from .generation import generation_config as generation_config_for
from .kv import SCORING_ATTENTION, KVMemory, scoring_entries
from .retrieval import RetrievalMemory
from .rope import KeyRotation, find_rotary
from .slots import SlotMemory
from .state import MemoryState

MEMORY_WEIGHTS = "memory.safetensors"
BACKBONE_DIR = "./backbone"


@dataclass
class MemGPTOutput:
    logits: torch.Tensor | None  # (B, T, V) over the chunk's tokens
    loss: torch.Tensor | None
    memory: MemoryState  # the state after reading the chunk


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
        device = torch.device(device) if device is not None else default_device()
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.to(device=device, dtype=dtype)

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
        gguf = hub.find_gguf(name_or_path, gguf_file)
        if gguf is not None:  # not referenced by name: save_pretrained writes it as backbone/ (safetensors)
            options.setdefault("memory", "kv")
            backbone = hub.load_backbone(gguf.parent, dtype=dtype, gguf_file=gguf.name)
            tokenizer = hub.load_tokenizer(gguf.parent, gguf_file=gguf.name)
            config = MemGPTConfig(backbone=backbone.config.to_dict(), **options)
            return cls(config, backbone, tokenizer, device=device, dtype=dtype)
        path = hub.resolve(name_or_path, trust_remote_code)
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: not a MemGPT or Hugging Face model folder")
        raw = json.loads(config_file.read_text())
        if raw.get("model_type") != "memgpt":  # a plain HF causal LM
            options.setdefault("memory", "kv")
            config = MemGPTConfig(backbone=str(name_or_path), **options)
            backbone = hub.load_backbone(path, trust_remote_code)
            tokenizer = hub.load_tokenizer(path, trust_remote_code)
            return cls(config, backbone, tokenizer, device=device, dtype=dtype)
        config = MemGPTConfig.from_dict(raw).replace(**options)
        if isinstance(config.backbone, str):
            local = config.backbone.startswith("./")
            backbone_path = (
                path / config.backbone if local else hub.resolve(config.backbone, trust_remote_code)
            )
            backbone = hub.load_backbone(backbone_path, trust_remote_code)
        else:
            backbone = hub.backbone_from_config(config.backbone)
        has_tokenizer = (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
        tokenizer = hub.load_tokenizer(path) if has_tokenizer else None
        model = cls(config, backbone, tokenizer, device=device, dtype=dtype)
        model._load_memory_weights(path / MEMORY_WEIGHTS)
        return model

    def save_pretrained(self, directory: str | Path, save_backbone: bool | None = None) -> None:
        """config.json + memory.safetensors (+ backbone/ when it is not a named pretrained model) + tokenizer."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        referenced = isinstance(self.config.backbone, str) and not self.config.backbone.startswith("./")
        if save_backbone is None:
            save_backbone = not referenced
        config = self.config
        if save_backbone:
            self.backbone.save_pretrained(directory / BACKBONE_DIR)
            config = config.replace(backbone=BACKBONE_DIR)
        elif not referenced:
            raise ValueError("this backbone has no name to reference; save it with save_backbone=True")
        config.save(directory)
        weights = {k: v.detach().contiguous().cpu() for k, v in self.memory.state_dict().items()}
        save_file(weights, str(directory / MEMORY_WEIGHTS), metadata={"memory": config.memory})
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(directory))

    def _load_memory_weights(self, file: Path) -> None:
        expected = self.memory.state_dict()
        if not expected:
            return
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} is missing: a {self.config.memory} MemGPT needs its memory weights"
            )
        with safe_open(str(file), framework="pt") as f:
            found = {k: f.get_tensor(k) for k in f.keys()}
        for name, tensor in expected.items():
            if name not in found or found[name].shape != tensor.shape:
                got = tuple(found[name].shape) if name in found else "missing"
                raise ValueError(
                    f"memory weights in {file} do not fit this model: {name} is {got} in the file, "
                    f"{tuple(tensor.shape)} in the model (memory={self.config.memory}, "
                    f"num_slots={self.config.num_slots}, hidden_size={self.hidden_size})"
                )
        self.memory.load_state_dict(found, strict=True)

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
            if self.config.memory == "slots":
                sig["num_slots"] = self.config.num_slots
            if self.config.memory == "retrieval":  # the store's layout
                sig["block"] = self.config.retrieval_block
            self._signature = sig
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
        input_ids = input_ids.to(self.device)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(self.device).long()
        state = self.init_state(input_ids.shape[0]) if memory is None else memory.to(self.device)
        self.check_state(state)
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
        embeds = self.backbone.get_input_embeddings()(input_ids)  # (B, T, D)
        inputs = self.memory.read_inputs(state.tensors, embeds, mask, write=True, input_ids=input_ids)
        out = self._backbone(inputs, use_cache=inputs.cache is not None)
        hidden = out.last_hidden_state  # (B, P, D)
        tensors = self.memory.update(state.tensors, inputs, hidden, mask, out.attentions)
        new_state = MemoryState(state.kind, tensors, state.signature)
        logits = self.backbone.get_output_embeddings()(hidden[:, inputs.text]) if return_logits else None
        return MemGPTOutput(logits, _lm_loss(logits, labels, mask), new_state)

    def step(
        self, state: MemoryState, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> MemoryState:
        """Update the memory with one chunk per document (B, T), right-padded."""
        return self.forward(input_ids, attention_mask, memory=state, return_logits=False).memory

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
        docs = _rows(documents, attention_mask)
        state = self.init_state(len(docs)) if memory is None else memory
        C = self.config.chunk_size
        n_chunks = max((len(d) + C - 1) // C for d in docs) if docs else 0
        ids, mask = _right_pad(docs, n_chunks * C, self.tokenizer_pad_id)  # (B, N*C)
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
        rows = _rows(prompt, attention_mask)
        if any(len(r) == 0 for r in rows):
            raise ValueError("generate needs at least one prompt token per row")
        C = self.config.chunk_size
        split = [(len(r) - 1) // C * C for r in rows]  # read whole chunks; keep 1..C tokens visible
        state = self.init_state(len(rows)) if memory is None else memory.to(self.device)
        if any(split):
            state = self.read([r[:s] for r, s in zip(rows, split, strict=True)], memory=state)
        self.check_state(state)
        tail_ids, tail_mask = _left_pad(
            [r[s:] for r, s in zip(rows, split, strict=True)], config.pad_token_id
        )
        tail_ids, tail_mask = tail_ids.to(self.device), tail_mask.to(self.device)
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
                self.backbone.base_model(
                    inputs_embeds=inputs.inputs_embeds[:, :prefix],
                    # the cached entries' columns, then the prefix's: every column but the prompt's
                    attention_mask=inputs.attention_mask[:, : -tail_ids.shape[1]],
                    position_ids=inputs.position_ids[:, :prefix],
                    cache=cache,
                    use_cache=True,
                )
            out = self.backbone.generate(
                input_ids=tail_ids,
                attention_mask=inputs.attention_mask,  # (B, memory + T): longer than the ids, so none is skipped
                position_ids=inputs.position_ids[:, inputs.text],
                cache=cache,
                generation_config=config,
                logits_processor=logits_processor,
                stopping_criteria=stopping_criteria,
                streamer=streamer,
            )
        sequences = out.sequences if isinstance(out, GenerateDecoderOnlyOutput) else out
        sequences = torch.cat([prompt.to(self.device), sequences[:, tail_ids.shape[1] :]], dim=1)
        if isinstance(out, GenerateDecoderOnlyOutput):
            out.sequences = sequences
            return out
        return sequences

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
    shapes = hub.backbone_shapes(backbone.config)
    if config.memory == "slots":
        init_std = getattr(backbone.config, "initializer_range", 0.02)
        return SlotMemory(config.num_slots, shapes["hidden_size"], init_std)
    if config.kv_positions == "cache" and config.kv_budget is not None:
        window = hub.position_window(backbone.config)
        room = config.prompt_room
        if window is not None and config.kv_budget + config.chunk_size + room > window:
            what = {"retrieval": " + retrieval_topk * retrieval_block", "archival": " + recalled passages"}
            raise ValueError(
                f"kv_budget + chunk_size{what.get(config.memory, '')} "
                f"({config.kv_budget} + {config.chunk_size}{f' + {room}' if room else ''}) must fit the "
                f"backbone's {window}-position window"
            )
    rotary = find_rotary(backbone) if config.kv_positions == "cache" else None
    shape = (shapes["num_layers"], shapes["num_kv_heads"], shapes["head_dim"])
    kv = (config.kv_budget, config.kv_sinks, config.kv_recent, config.kv_positions)
    rotation = KeyRotation(rotary) if rotary is not None else None
    if config.memory == "retrieval":
        tier = {
            "block": config.retrieval_block,
            "topk": config.retrieval_topk,
            "every": config.retrieval_every,
        }
        return RetrievalMemory(*shape, *kv, rotation, decay=config.kv_decay, **tier)
    if config.memory == "archival":
        return ArchivalMemory(*shape, *kv, rotation, decay=config.kv_decay, tokenizer=tokenizer,
                              embed=lambda ids: backbone.get_input_embeddings()(ids), passage=config.archive_passage,
                              topk=config.archive_topk)  # fmt: skip
    return KVMemory(*shape, *kv, rotation, decay=config.kv_decay)


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


def _rows(ids: torch.Tensor | list[torch.Tensor], mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Unpadded 1-D token tensors from a list, or from a (B, T) tensor and its mask."""
    if isinstance(ids, (list, tuple)):
        return [torch.as_tensor(r, dtype=torch.long).flatten() for r in ids]
    ids = ids if ids.dim() == 2 else ids.unsqueeze(0)
    if mask is None:
        return list(ids.unbind(0))
    return [r[m.bool()] for r, m in zip(ids.unbind(0), mask.to(ids.device).unbind(0), strict=True)]


def _right_pad(rows: list[torch.Tensor], width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r.cpu()
        mask[i, : len(r)] = 1
    return ids, mask


def _left_pad(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, -len(r) :] = r.cpu()
            mask[i, -len(r) :] = 1
    return ids, mask


def count_chunks(n_tokens: int, chunk_size: int) -> int:
    return math.ceil(n_tokens / chunk_size)
