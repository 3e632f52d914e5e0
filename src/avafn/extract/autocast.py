"""Pretrained extractor networks made ready for inference once, at load, instead of per forward.

Under ``torch.autocast`` every matrix layer casts its float32 weight to bfloat16 on each call
(the cast is cached only inside one autocast region), and a weight-normalised convolution
(wav2vec 2.0's positional embedding) recomputes its weight from ``g`` and ``v`` on each call.
For wav2vec2-large that is 317 M parameters cast per forward, i.e. per batch of utterances.

:func:`prepare_for_inference` does both once: the weight normalisation is baked into a plain
weight, and for ``"bf16"`` the weights (and biases) of the linear and convolution layers are
stored in bfloat16. The forward under :func:`autocast` then computes exactly what it computed
before, bit for bit (the autocast cast and ``Tensor.to(bfloat16)`` round the same way; norm
layers keep float32 parameters), with half the weight memory.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.utils import parametrize

#: the layers whose weights autocast would cast to bfloat16 on every call
_MATRIX_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``precision == "bf16"``, else nothing."""
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def bake_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every parametrization (weight normalisation) by the weight it computes."""
    for m in list(module.modules()):
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


def prepare_for_inference(module: nn.Module, precision: str) -> nn.Module:
    """``module`` (in place) ready for :func:`autocast` inference at ``precision`` (module
    docstring). Refuses a module whose matrix weights are already bfloat16 for ``"fp32"``:
    float32 features cannot come from bfloat16 weights."""
    bake_weight_norm(module)
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, _MATRIX_LAYERS):
                continue
            if precision == "bf16":
                m.to(torch.bfloat16)
            elif m.weight.dtype == torch.bfloat16:
                raise ValueError("the network's weights are bfloat16 (prepared for bf16 "
                                 "inference); float32 inference needs a float32 network")
    return module.eval()


def weights_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of the first matrix layer's weight (None: no such layer)."""
    for m in module.modules():
        if isinstance(m, _MATRIX_LAYERS):
            return m.weight.dtype
    return None
