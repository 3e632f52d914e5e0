"""Small operations shared by the model's modules."""

from __future__ import annotations

import math

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


def frozen_t(w: torch.Tensor) -> torch.Tensor:
    """A detached copy of w^T, contiguous: (out, in) -> (in, out), the layout in which small
    matrix products on the CPU run fastest (up to 1.6x against a transposed view). Used by the
    inference step's weight snapshots (``frozen()``)."""
    return w.detach().t().clone(memory_format=torch.contiguous_format)


def sum_is_finite(x: torch.Tensor) -> bool:
    """The cheap finite test, one pass: True means every value of x is finite (a sum is finite
    only when its terms are). False means a NaN / inf or finite values whose sum overflows, so
    the caller runs the exact element-wise test then."""
    return math.isfinite(x.sum())
