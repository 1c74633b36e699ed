"""The losses of one batch: memory language modelling, facts, summaries, and the context baseline."""

import torch
import torch.nn.functional as F

from ..model import MemGPT
from .batches import Batch, Seq
from .recipe import TrainConfig


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy and the number of predicted tokens."""
    labels = labels[:, 1:].to(logits.device)
    n = int((labels != -100).sum())
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
    )
    return loss, n


def _split_labels(seq: Seq, context_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of the first `context_len` positions (the chunk: lm) and of the rest (the target)."""
    lm, target = seq.labels.clone(), seq.labels.clone()
    lm[:, context_len:] = -100
    target[:, :context_len] = -100
    return lm, target


def batch_loss(model: MemGPT, batch: Batch, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of one batch: read the chunks in order, with truncated BPTT, scoring each objective."""
    B, N, C = batch.chunks.shape
    dev = model.device
    sums: dict[str, list] = {k: [0.0, 0] for k in ("lm", "facts", "summary", "context", "answer")}

    def add(name: str, loss_n: tuple[torch.Tensor, int]) -> None:
        sums[name][0] = sums[name][0] + loss_n[0]
        sums[name][1] += loss_n[1]

    state = model.init_state(B)
    for t in range(N):
        chunk = batch.chunks[:, t].to(dev)
        if batch.query is not None:  # a fact somewhere in the text, asked after it: only the answer is scored
            state = model.step(state, chunk)
        elif batch.facts is None:  # plain text: the chunk's own tokens, with the memory of earlier chunks
            out = model(chunk, memory=state)
            add("lm", _ce(out.logits, chunk))
            state = out.memory
        else:
            if cfg.facts_weight or cfg.lm_weight:  # else the chunk's own outputs are not scored: skip them
                seq = batch.facts[t]
                lm_labels, fact_labels = _split_labels(seq, C)
                logits = model(seq.ids.to(dev), seq.mask.to(dev), memory=state).logits
                if cfg.lm_weight:  # a zero-weight loss would still cost its softmax and backward
                    add("lm", _ce(logits, lm_labels))
                if cfg.facts_weight:
                    add("facts", _ce(logits, fact_labels))
            state = model.step(state, chunk)
            if cfg.summary_every_chunk or t == N - 1:
                s = batch.summaries[t if cfg.summary_every_chunk else 0]
                add("summary", _ce(model(s.ids.to(dev), s.mask.to(dev), memory=state).logits, s.labels))
        if (t + 1) % model.config.bptt_depth == 0:
            state = state.detach()
    if batch.query is not None:
        q = batch.query
        add("answer", _ce(model(q.ids.to(dev), q.mask.to(dev), memory=state).logits, q.labels))
    if batch.context is not None:
        c = batch.context
        add(
            "context",
            _ce(model.backbone(input_ids=c.ids.to(dev), attention_mask=c.mask.to(dev)).logits, c.labels),
        )

    weights = {"lm": cfg.lm_weight if batch.facts is not None else 1.0, "facts": cfg.facts_weight,
               "summary": cfg.summary_weight, "context": cfg.summary_weight, "answer": 1.0}  # fmt: skip
    loss = sum(weights[k] * s / max(n, 1) for k, (s, n) in sums.items() if n)
    stats = {k: float(s.detach()) / n for k, (s, n) in sums.items() if n}
    return loss, stats
