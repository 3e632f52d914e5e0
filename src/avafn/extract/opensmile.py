"""openSMILE acoustic features (the ``opensmile`` package: native library and configs shipped
in the wheel; offline, CPU), registered as the audio extractor ``opensmile``.

One utterance-level vector of openSMILE *functionals* per clip (mono 16 kHz, as decoded for
wav2vec 2.0): ``eGeMAPSv02`` (88 features, the extended Geneva minimalistic set) by default,
``ComParE_2016`` (6,373 features, the set MELD's own audio baselines build on) or any other
set the package ships. The values are openSMILE's, unscaled (pitch in semitones, loudness,
spectral slopes, ...). A clip openSMILE cannot describe (too short: it fills NaN) is stored
as missing with the reason.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from avafn.extract.base import Extractor, Result
from avafn.extract.media import SAMPLE_RATE, decode_audio
from avafn.extract.registry import ExtractorError, register_extractor

DEFAULT_FEATURE_SET = "eGeMAPSv02"
FEATURE_LEVEL = "Functionals"


@register_extractor("opensmile")
class OpenSmileExtractor(Extractor):
    """openSMILE functionals of each clip's audio (module docstring)."""

    kind = "audio"
    unit_size = 32

    def __init__(self, feature_set: str = DEFAULT_FEATURE_SET, modality: str = "audio"):
        import opensmile

        sets = list(opensmile.FeatureSet.__members__)
        if feature_set not in sets:
            raise ExtractorError(f"openSMILE feature set {feature_set!r} unknown (known: "
                                 f"{', '.join(sets)})")
        self.feature_set = feature_set
        self.modality = modality
        self.version = getattr(opensmile, "__version__", "?")
        self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                                      feature_level=opensmile.FeatureLevel[FEATURE_LEVEL])
        self.width = len(self._smile.feature_names)

    def meta(self) -> dict:
        return {
            "extractor": self.name, "model_id": f"opensmile {self.version} {self.feature_set}",
            "layer": None, "width": self.width,
            "config": {"feature_set": self.feature_set, "feature_level": FEATURE_LEVEL,
                       "sample_rate": SAMPLE_RATE, "precision": "fp32"},
        }

    def loader(self, workers: int) -> Callable:
        return decode_audio

    def process(self, payloads: list[np.ndarray]) -> list[Result]:
        out: list[Result] = []
        for wave in payloads:
            with warnings.catch_warnings():  # "Segment too short, filling with NaN."
                warnings.simplefilter("ignore", UserWarning)
                v = self._smile.process_signal(np.asarray(wave, np.float32), SAMPLE_RATE)
            v = np.array(v, dtype=np.float32).reshape(-1)  # a writable copy of the frame
            if v.shape[0] != self.width or not np.isfinite(v).all():
                reason = f"audio too short for openSMILE ({len(wave)} samples at 16 kHz)"
                out.append((None, len(wave), reason))
            else:
                out.append((v, len(wave), ""))
        return out

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("opensmile options")
        g.add_argument("--feature-set", default=DEFAULT_FEATURE_SET, metavar="SET",
                       help="openSMILE functionals: eGeMAPSv02 (88-d, default), ComParE_2016 "
                            "(6,373-d) or another set the opensmile package ships")

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: str) -> OpenSmileExtractor:
        if args.precision == "bf16":
            raise ExtractorError("--precision bf16: openSMILE computes in float32 only")
        if args.model is not None:
            raise ExtractorError("--model: openSMILE has no model; choose --feature-set")
        return cls(args.feature_set)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> OpenSmileExtractor:
        cfg = meta.get("config", {})
        if cfg.get("feature_level", FEATURE_LEVEL) != FEATURE_LEVEL:
            raise ExtractorError(f"openSMILE feature level {cfg.get('feature_level')!r}: only "
                                 f"{FEATURE_LEVEL} is supported")
        return cls(str(cfg.get("feature_set", DEFAULT_FEATURE_SET)))
