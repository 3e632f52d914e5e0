"""Small operations shared by the model's modules."""

from __future__ import annotations

import torch
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (as ``F.dropout``): each element kept with probability 1 - p and scaled
    by 1 / (1 - p). The mask comes from ``torch.rand_like``, which on the CPU costs about half
    of ``F.dropout``'s Bernoulli draw (benchmarks/bench_model.py)."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.rand_like(x) >= p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
