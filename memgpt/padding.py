"""Rows of token ids of different lengths as one (B, T) tensor and its mask, and back."""

from collections.abc import Sequence

import torch

TokenRows = Sequence[Sequence[int] | torch.Tensor]


def rows_of(ids: torch.Tensor | TokenRows, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Unpadded 1-D token tensors from a list, or from a (B, T) tensor and its mask."""
    if not isinstance(ids, torch.Tensor):
        return [torch.as_tensor(r, dtype=torch.long).flatten() for r in ids]
    ids = ids if ids.dim() == 2 else ids.unsqueeze(0)
    if mask is None:
        return list(ids.unbind(0))
    return [r[m.bool()] for r, m in zip(ids.unbind(0), mask.to(ids.device).unbind(0), strict=True)]


def right_pad(rows: TokenRows, pad: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, width) ids and mask, padding after each row; empty rows are all padding."""
    return _pad(rows, pad, width, left=False)


def left_pad(rows: TokenRows, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask, padding before each row, so every row ends where generation starts."""
    return _pad(rows, pad, None, left=True)


def _pad(rows: TokenRows, pad: int, width: int | None, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rows = rows_of(rows)
    width = max((len(r) for r in rows), default=0) if width is None else width
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        at = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, at], mask[i, at] = r.cpu(), 1
    return ids, mask
