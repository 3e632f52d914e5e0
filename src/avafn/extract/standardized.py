"""Any extractor's vectors z-scored with statistics fixed at training time, registered as
``standardized``.

Unscaled features (openSMILE functionals: pitch in semitones next to loudness, energies in the
thousands) starve a model whose input layer is a plain linear map: AVAFN trained on raw
eGeMAPS predicts one class. A store written by :func:`avafn.data.acted.fold_store` with
``standardize=True`` records this extractor: the inner extractor's own record plus the
per-feature mean and standard deviation of the training utterances, so that a run trained on
it, rebuilt from its record by ``avafn predict``, standardises new media exactly as its
training data were::

    {"extractor": "standardized", "width": 88, "config": {"inner": {...opensmile record...},
     "mean": [...], "std": [...], "fitted_on": "train of fold 0/6"}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from avafn.extract.base import Extractor, Result
from avafn.extract.registry import ExtractorError, rebuild, register_extractor


def standardized_meta(inner: Mapping[str, Any], mean: np.ndarray, std: np.ndarray,
                      fitted_on: str) -> dict:
    """The record of ``inner`` (a store modality's meta) standardised with ``mean`` / ``std``
    (a zero std is stored as 1: that feature is only centred)."""
    inner = {k: v for k, v in inner.items() if k not in ("modality", "config_hash")}
    std = np.where(np.asarray(std) > 1e-8, std, 1.0)
    return {"extractor": StandardizedExtractor.name, "width": int(inner["width"]),
            "model_id": inner.get("model_id"), "layer": inner.get("layer"),
            "config": {"inner": inner, "mean": [float(x) for x in mean],
                       "std": [float(x) for x in std], "fitted_on": fitted_on}}


@register_extractor("standardized")
class StandardizedExtractor(Extractor):
    """The inner extractor's vectors, then ``(x - mean) / std`` per feature."""

    kind = "standardized"  # not offered by ``avafn extract``: written by fold_store

    def __init__(self, inner: Any, meta: Mapping[str, Any]):
        cfg = meta["config"]
        self.inner = inner
        self.record = dict(meta)
        self.mean = np.asarray(cfg["mean"], np.float32)
        self.std = np.asarray(cfg["std"], np.float32)
        self.modality = inner.modality
        self.unit_size = inner.unit_size
        self.input = inner.input
        if self.mean.shape != (int(meta["width"]),) or self.std.shape != self.mean.shape:
            raise ExtractorError(f"standardized record: mean/std of {self.mean.shape} for "
                                 f"width {meta['width']}")

    def meta(self) -> dict:
        return {k: v for k, v in self.record.items() if k not in ("modality", "config_hash")}

    def loader(self, workers: int) -> Callable:
        return self.inner.loader(workers)

    def process(self, payloads: list[Any]) -> list[Result]:
        out = []
        for v, n, why in self.inner.process(payloads):
            if v is not None:
                v = ((np.asarray(v, np.float32) - self.mean) / self.std).astype(np.float32)
            out.append((v, n, why))
        return out

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> StandardizedExtractor:
        cfg = meta.get("config", {})
        if not isinstance(cfg.get("inner"), Mapping) or "mean" not in cfg or "std" not in cfg:
            raise ExtractorError("standardized record without its inner extractor, mean or std")
        inner = rebuild(cfg["inner"], device=device, model_override=model_override, **options)
        return cls(inner, meta)
