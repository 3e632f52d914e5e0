"""avafn: audio-visual attentive fusion network for emotion recognition in conversation.

``from avafn import Predictor`` (:class:`avafn.inference.predictor.Predictor`) is imported on
first use, so ``import avafn`` stays light.
"""

from __future__ import annotations

from typing import Any

from avafn._version import __version__

__all__ = ["Predictions", "Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "Predictions"):
        from avafn.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'avafn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Predictions", "Predictor"})
