"""A third-party audio extractor, as a plug-in package would ship it: defined outside the
``avafn`` package and found through the ``avafn.extractors`` entry point group (the tests
declare the entry point ``band-energy = plugin_extractor:BandEnergy``)."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from avafn.extract.base import Extractor
from avafn.extract.media import decode_audio


class BandEnergy(Extractor):
    """Log energy of the clip's audio in ``bands`` equal frequency bands up to 8 kHz."""

    name = "band-energy"
    kind = "audio"
    unit_size = 4

    def __init__(self, bands: int = 8, modality: str = "audio"):
        self.bands = int(bands)
        self.modality = modality

    def meta(self) -> dict:
        return {"extractor": self.name, "model_id": "band-energy", "layer": None,
                "width": self.bands, "config": {"bands": self.bands, "scale": "log"}}

    def loader(self, workers: int):
        return decode_audio

    def process(self, payloads: list[np.ndarray]) -> list:
        out = []
        for wave in payloads:
            power = np.abs(np.fft.rfft(np.asarray(wave, np.float64))) ** 2
            edges = np.linspace(0, len(power), self.bands + 1).astype(int)
            v = np.log1p([power[a:b].sum() for a, b in itertools.pairwise(edges)])
            out.append((v.astype(np.float32), len(wave), ""))
        return out

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument_group("band-energy options").add_argument(
            "--bands", type=int, default=8, help="frequency bands (default 8)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, device: str) -> BandEnergy:
        return cls(args.bands)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], device: str = "cpu",
                  model_override: str | None = None, **options: Any) -> BandEnergy:
        return cls(meta["config"]["bands"])
