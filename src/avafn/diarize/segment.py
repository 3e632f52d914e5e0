"""A conversation's utterances from its audio alone: voice activity detection, diarization,
utterances, RTTM.

::

    from avafn.diarize import DiarizeOptions, find_segments
    segs = find_segments("talk.mp4", DiarizeOptions(), rttm="out/segments.rttm")

Utterances are the diarizer's speaker turns, consecutive turns of one speaker less than
``merge_gap`` (1 s) apart joined, and an utterance longer than ``max_utterance`` split at its longest
pause (at equal parts when it has none). The RTTM written lists them (one ``SPEAKER`` line
each); corrected by hand it is a valid ``--segments`` file, and the segments returned name
its lines as their source.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avafn.diarize.diarization import (
    DIARIZERS,
    CountEstimate,
    Diarizer,
    Turn,
)
from avafn.diarize.errors import DiarizeError
from avafn.diarize.options import DiarizeOptions
from avafn.diarize.vad import FRAME, SAMPLE_RATE, SileroVAD, regions_from_probs
from avafn.io import atomic_write_bytes
from avafn.segments import Segment

log = logging.getLogger(__name__)


def make_diarizer(options: DiarizeOptions) -> Diarizer:
    options.check()
    return DIARIZERS.get(options.diarizer)(model=options.model, device=options.device)


def load_audio(media: str | os.PathLike) -> np.ndarray:
    """The media's first audio stream, mono 16 kHz; a file without usable audio is a
    DiarizeError naming it."""
    from avafn.extract.media import MediaError, decode_audio

    try:
        return decode_audio(media, sample_rate=SAMPLE_RATE)
    except MediaError as e:
        raise DiarizeError(f"{media}: cannot find utterances without usable audio "
                           f"({e.reason})") from None


@dataclass
class Diarization:
    """What :func:`diarize` found: speech regions, speaker turns and utterances."""

    speech: list[tuple[float, float]]
    turns: list[Turn]
    utterances: list[Turn]
    duration: float
    #: the speaker count and how sure it is (None: the diarizer does not say)
    count: CountEstimate | None = None


def diarize(wave: np.ndarray, options: DiarizeOptions | None = None,
            diarizer: Diarizer | None = None, vad: SileroVAD | None = None) -> Diarization:
    """Speech regions, speaker turns and utterances of 16 kHz mono audio."""
    options = options or DiarizeOptions()
    vad = vad or SileroVAD(options.vad)
    diarizer = diarizer or make_diarizer(options)
    probs = vad.probabilities(wave)
    speech = regions_from_probs(probs, len(wave), vad.config)
    turns = diarizer(wave, speech, num_speakers=options.num_speakers,
                     min_speakers=options.min_speakers, max_speakers=options.max_speakers)
    turns = snap_speaker_changes(turns, probs, threshold=vad.config.threshold - 0.15)
    utts = utterances_from_turns(turns, options.merge_gap, options.max_utterance)
    count = getattr(diarizer, "last_estimate", None)
    if count is not None and count.count != len({u.speaker for u in utts}):
        count = None  # a turn-level step changed the count: the estimate no longer applies
    return Diarization(speech, turns, utts, len(wave) / SAMPLE_RATE, count)


def snap_speaker_changes(turns: Sequence[Turn], probs: np.ndarray, threshold: float = 0.35,
                         radius: float = 0.5) -> list[Turn]:
    """Move each change of speaker between touching turns to the pause nearest it: the
    frames within ``radius`` s whose speech probability (``probs``, one per VAD frame) is
    below ``threshold`` around the least likely one; kept where there is no such pause."""
    step = FRAME / SAMPLE_RATE
    out = list(turns)
    for i in range(len(out) - 1):
        a, b = out[i], out[i + 1]
        if a.speaker == b.speaker or b.start - a.end > 1e-3:
            continue
        lo = max(0, int(np.ceil(max(a.start + 0.2, a.end - radius) / step)))
        hi = min(len(probs), int(min(b.end - 0.2, a.end + radius) / step))
        if hi <= lo:
            continue
        j = lo + int(np.argmin(probs[lo:hi]))
        if probs[j] >= threshold:
            continue
        j0, j1 = j, j + 1
        while j0 > lo and probs[j0 - 1] < threshold:
            j0 -= 1
        while j1 < hi and probs[j1] < threshold:
            j1 += 1
        out[i] = replace(a, end=round(j0 * step, 3))
        out[i + 1] = replace(b, start=round(j1 * step, 3))
    return out


def utterances_from_turns(turns: Sequence[Turn], merge_gap: float = 0.5,
                          max_utterance: float = 20.0) -> list[Turn]:
    """Join a speaker's consecutive turns less than ``merge_gap`` apart; split utterances
    longer than ``max_utterance`` at their longest pause (equal parts without one)."""
    groups: list[list[Turn]] = []
    for t in sorted(turns, key=lambda t: t.start):
        g = groups[-1] if groups else None
        if g and g[-1].speaker == t.speaker and t.start - g[-1].end < merge_gap:
            g.append(t)
        else:
            groups.append([t])
    out: list[Turn] = []
    for g in groups:
        out += _split_long(g, max_utterance)
    return out


def _confidence(group: Sequence[Turn]) -> float | None:
    """Duration-weighted mean confidence of turns (None when none has one)."""
    known = [(t.end - t.start, t.confidence) for t in group if t.confidence is not None]
    if not known:
        return None
    w = sum(d for d, _ in known)
    return round(sum(d * c for d, c in known) / w, 3) if w > 0 else known[0][1]


def _split_long(group: list[Turn], limit: float) -> list[Turn]:
    a, b, who = group[0].start, group[-1].end, group[0].speaker
    if b - a <= limit:
        return [Turn(a, b, who, _confidence(group))]
    if len(group) > 1:
        gaps = [group[i + 1].start - group[i].end for i in range(len(group) - 1)]
        i = int(np.argmax(gaps)) + 1
        return _split_long(group[:i], limit) + _split_long(group[i:], limit)
    n = int(np.ceil((b - a) / limit))
    edges = np.linspace(a, b, n + 1)
    return [Turn(round(float(edges[i]), 3), round(float(edges[i + 1]), 3), who,
                 group[0].confidence) for i in range(n)]


def rttm_text(turns: Sequence[Turn] | Sequence[Segment], file_id: str) -> str:
    """RTTM ``SPEAKER`` lines (one per turn / segment)."""
    fid = "".join(c if not c.isspace() else "_" for c in file_id) or "audio"
    return "".join(f"SPEAKER {fid} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> "
                   f"{str(t.speaker).replace(' ', '_')} <NA> <NA>\n" for t in turns)


def write_rttm(path: str | os.PathLike, turns: Sequence[Turn] | Sequence[Segment],
               file_id: str) -> Path:
    """Write :func:`rttm_text` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, rttm_text(turns, file_id).encode())
    return path


def to_segments(utterances: Sequence[Turn], source: str) -> list[Segment]:
    """Segments (no text) whose sources are ``source:line`` (the RTTM's line numbers), with
    ``speaker_source="diarization"`` and the turns' confidence."""
    return [Segment(u.start, u.end, u.speaker, None, f"{source}:{i}",
                    speaker_source="diarization", speaker_confidence=u.confidence)
            for i, u in enumerate(utterances, 1)]


def find_segments(media: str | os.PathLike, options: DiarizeOptions | None = None,
                  rttm: str | os.PathLike | None = None) -> list[Segment]:
    """The utterances of ``media`` and who speaks them, from its audio; written to ``rttm``
    when given (the returned segments then name its lines). The speaker count and how sure it
    is (with the ``--num-speakers`` hint when not sure) are logged. No speech is a
    DiarizeError."""
    options = options or DiarizeOptions()
    options.check()
    wave = load_audio(media)
    found = diarize(wave, options)
    if found.count is not None:
        log.info(f"diarization: {found.count.describe()}")
    if not found.utterances:
        raise DiarizeError(f"{media}: no speech found in the audio "
                           f"({found.duration:.1f} s); give --segments instead")
    source = str(media) + " (diarization)"
    if rttm is not None:
        source = str(write_rttm(rttm, found.utterances, Path(media).stem))
    return to_segments(found.utterances, source)


def speaker_turns(media: str | os.PathLike, options: DiarizeOptions | None = None
                  ) -> list[Turn]:
    """Who speaks when in ``media`` (for :func:`avafn.segments.assign_speakers`)."""
    return diarize(load_audio(media), options).turns
