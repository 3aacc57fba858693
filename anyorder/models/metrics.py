"""torchmetrics that aggregate over batches and DDP ranks."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from anyorder.data.layout import TokenKind


class NLLByKind(Metric):
    """Mean NLL (nats/token) of scored positions, split by :class:`TokenKind`."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.zeros(len(TokenKind), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(len(TokenKind), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, kind: torch.Tensor) -> None:
        kind = kind.long()
        self.total += torch.bincount(kind, weights=nll.double(), minlength=len(TokenKind))
        self.count += torch.bincount(kind, minlength=len(TokenKind)).double()

    def compute(self) -> dict[str, torch.Tensor]:
        """``{kind name: mean nll}`` for kinds that were scored, plus ``all``."""
        result = {
            TokenKind(k).name.lower(): (self.total[k] / self.count[k]).float()
            for k in range(len(TokenKind))
            if self.count[k] > 0
        }
        result["all"] = (self.total.sum() / self.count.sum().clamp(min=1)).float()
        return result
