"""Speaker names: one name per speaker (spellings unified), speakers for untagged
segments (from a diarizer's turns, or one unknown speaker), party indices."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import replace

from avafn.notices import Notices
from avafn.segments.base import UNKNOWN_SPEAKER, W_SPELLINGS, Segment, SegmentError


def speaker_key(name: str) -> str:
    """What makes two spellings one speaker: Unicode-normalised, spacing collapsed, case
    folded (``" ALICE "``, ``"Alice"`` and ``"alice"`` share a key)."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def _display(spellings: Sequence[str]) -> str:
    for s in spellings:  # the first spelling in mixed case
        if s != s.upper() and s != s.lower():
            return s
    s = spellings[0]
    if re.search(r"[\d_]", s):  # SPEAKER_01, A1, MAN #2 stay as they are
        return s
    return re.sub(r"[^\W\d_]+", lambda m: m.group(0).capitalize(), s.lower())  # Dr. Green


def unify_speakers(segs: Sequence[Segment], notices: Notices | None = None) -> list[Segment]:
    """One name per speaker (see the module docstring); ``None`` speakers stay ``None``."""
    spellings: dict[str, list[str]] = {}
    for s in segs:
        if s.speaker is not None:
            name = " ".join(unicodedata.normalize("NFKC", s.speaker).split())
            forms = spellings.setdefault(speaker_key(name), [])
            if name not in forms:
                forms.append(name)
    shown = {k: _display(v) for k, v in spellings.items()}
    if notices is not None:
        for k, forms in spellings.items():
            if len(forms) > 1:
                notices.warn(W_SPELLINGS, f"{' / '.join(forms)} -> {shown[k]}")
    return [s if s.speaker is None else replace(s, speaker=shown[speaker_key(s.speaker)])
            for s in segs]


#: a diarizer: media path -> speaker turns (``Segment`` with a speaker, text ``None``)
Diarizer = Callable[[str], Sequence[Segment]]
W_UNKNOWN = f"segments without a speaker tag, given one speaker {UNKNOWN_SPEAKER!r}"
W_DIARIZED = "segments without a speaker tag, speaker taken from diarization"


def untagged(segs: Sequence[Segment]) -> int:
    """How many segments have no speaker."""
    return sum(1 for s in segs if s.speaker is None)


def assign_speakers(segs: Sequence[Segment], turns: Sequence[Segment] | None = None,
                    notices: Notices | None = None) -> list[Segment]:
    """Give every segment without a speaker one.

    With ``turns`` (a diarizer's speaker turns over the same media), an untagged segment takes
    the speaker it overlaps most in time (the nearest turn when none overlaps); a diarized
    speaker who overlaps tagged segments is named after the tagged name it overlaps most, so
    that a half-tagged file keeps one name per person; such a segment records
    ``speaker_source="diarization"`` and ``speaker_confidence`` (the share of the overlapped
    time that speaker has, times the turns' own confidence when they carry one; 0 when no turn
    overlaps it). Without turns, every untagged segment is :data:`UNKNOWN_SPEAKER`. Each case
    is counted in ``notices``.
    """
    notices = notices if notices is not None else Notices()
    missing = untagged(segs)
    if not missing:
        return list(segs)
    first = next(s.source for s in segs if s.speaker is None)
    turns = [t for t in (turns or ()) if t.speaker is not None and t.end > t.start]
    if not turns:
        notices.warn(W_UNKNOWN, first, missing)
        return [replace(s, speaker=UNKNOWN_SPEAKER) if s.speaker is None else s for s in segs]

    def overlaps(s: Segment) -> dict[str, float]:
        acc: dict[str, float] = {}
        for t in turns:
            o = min(s.end, t.end) - max(s.start, t.start)
            if o > 0:
                acc[t.speaker] = acc.get(t.speaker, 0.0) + o
        return acc

    def turn_confidence(s: Segment, spk: str) -> float | None:
        """Overlap-weighted confidence of ``spk``'s turns over ``s`` (None: not given)."""
        got = [(min(s.end, t.end) - max(s.start, t.start),
                getattr(t, "confidence", getattr(t, "speaker_confidence", None)))
               for t in turns if t.speaker == spk]
        got = [(o, c) for o, c in got if o > 0 and c is not None]
        w = sum(o for o, _ in got)
        return sum(o * c for o, c in got) / w if w > 0 else None

    # diarized speaker -> the tagged name it overlaps most
    votes: dict[str, dict[str, float]] = {}
    for s in segs:
        if s.speaker is not None:
            for spk, o in overlaps(s).items():
                key = speaker_key(s.speaker)
                votes.setdefault(spk, {}).setdefault(key, 0.0)
                votes[spk][key] += o
    names = {speaker_key(s.speaker): s.speaker for s in segs if s.speaker is not None}
    rename = {spk: names[max(v, key=v.get)] for spk, v in votes.items() if v}
    out = []
    for s in segs:
        if s.speaker is None:
            ov = overlaps(s)
            if ov:
                spk = max(ov, key=ov.get)
                share = ov[spk] / sum(ov.values())  # how much of the talk there is theirs
                tc = turn_confidence(s, spk)
                conf = share * (tc if tc is not None else 1.0)
            else:
                mid = (s.start + s.end) / 2
                spk = min(turns, key=lambda t: min(abs(t.start - mid), abs(t.end - mid))).speaker
                conf = 0.0  # nobody speaks during it: the nearest turn is a guess
            s = replace(s, speaker=rename.get(spk, spk), speaker_source="diarization",
                        speaker_confidence=round(conf, 3))
        out.append(s)
    notices.warn(W_DIARIZED, first, missing)
    return unify_speakers(out)


def speaker_indices(segs: Sequence[Segment]) -> dict[str, int]:
    """Party index of each speaker, in order of first appearance (the model's convention)."""
    idx: dict[str, int] = {}
    for s in segs:
        if s.speaker is None:
            raise SegmentError(f"{s.source}: segment without a speaker (call assign_speakers)")
        idx.setdefault(s.speaker, len(idx))
    return idx
