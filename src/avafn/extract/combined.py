"""Several media extractors in one extraction job (``avafn extract audio+video``).

Each clip goes to one decoding process, which runs every part's loader on it (the audio
decoding and the frames + faces of the same clip); the main process then runs every part's
``process`` on the unit. So the media are read by one pool of workers in one pass, and the GPU
models of the parts alternate on the same units, instead of two jobs each starting its own
workers and reading every clip again. Every part writes its own modalities with its own
metadata, exactly what the part writes alone; a clip that fails for one part (no audio
stream, no face) is missing there only, with that part's reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from .base import Extractor, Result
from .job import _call, outputs_of
from .registry import ExtractorError

#: one part's payload of one clip: (payload, "") or (None, reason)
PartPayload = tuple[Any, str]


def load_parts(loaders: tuple[Callable, ...], path: str, start: float | None,
               end: float | None) -> list[PartPayload]:
    """Every part's loader on one clip (in a decoding process); a part's failure is its reason
    (the job's own rule, ``_call``), never the whole clip's: the job records it for that part's
    modalities only."""
    return [_call(load, ("", path, start, end))[1:] for load in loaders]


class CombinedExtractor(Extractor):
    """The parts' outputs from one job: ``outputs()`` is the union of theirs (distinct
    modality names), ``process`` returns per modality ``(vector | None, count, reason)``."""

    input = "media"

    def __init__(self, parts: Sequence[Extractor]) -> None:
        if len(parts) < 2:
            raise ExtractorError("a combined extraction needs at least two extractors")
        outs: dict[str, dict] = {}
        for part in parts:
            if part.input != "media":
                raise ExtractorError(f"extractor {part.name or part!r} does not read "
                                     "media; only media extractors can share a job")
            for m, meta in outputs_of(part).items():
                if m in outs:
                    raise ExtractorError(f"two extractors would write modality {m!r}")
                outs[m] = meta
        self.parts = tuple(parts)
        self._outputs = outs
        self._names = [list(outputs_of(p)) for p in self.parts]
        self.unit_size = min(int(p.unit_size) for p in self.parts)
        self.modality = "+".join(outs)

    def outputs(self) -> dict[str, dict]:
        return dict(self._outputs)

    def loader(self, workers: int) -> Callable:
        return functools.partial(load_parts, tuple(p.loader(workers) for p in self.parts))

    def process(self, payloads: list[list[PartPayload]]) -> list[Result]:
        per_clip: list[dict[str, tuple]] = [{} for _ in payloads]
        for k, (part, names) in enumerate(zip(self.parts, self._names)):
            ok = [i for i, clip in enumerate(payloads) if not clip[k][1]]
            done = dict(zip(ok, part.process([payloads[i][k][0] for i in ok]))) if ok else {}
            for i, clip in enumerate(payloads):
                vec, count, reason = done.get(i, (None, 0, clip[k][1]))
                for m in names:
                    v = vec.get(m) if isinstance(vec, dict) else vec
                    per_clip[i][m] = (v, count, reason)
        return [(vecs, 0, "") for vecs in per_clip]
