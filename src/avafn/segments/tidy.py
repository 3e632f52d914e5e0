"""Tidying a segment list: checked, sorted, clipped to the media, overlaps resolved by
policy, speaker spellings unified; each change counted."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

from avafn.io import format_time
from avafn.notices import Notices
from avafn.segments.base import (
    MIN_SEGMENT,
    MIN_UTTERANCE,
    OVERLAP_POLICIES,
    SHORT_OVERLAP,
    W_AFTER_END,
    W_BEFORE_START,
    W_CLIPPED,
    W_MERGED,
    W_OVERLAP_KEPT,
    W_SAME_MERGED,
    W_SHORT,
    W_SORTED,
    W_TRIMMED,
    Segment,
    SegmentError,
)
from avafn.segments.speakers import speaker_key, unify_speakers


def tidy_segments(segs: Sequence[Segment], duration: float | None = None, *,
                  overlaps: str = "keep", notices: Notices | None = None,
                  where: str = "segments") -> list[Segment]:
    """Check every segment, then sort, clip to ``[0, duration]``, resolve overlaps and unify
    speaker spellings, counting each change in ``notices``.

    Overlap policies (two segments of one speaker that overlap are joined under all but
    ``error``; segments of different speakers are never joined):

    - ``keep`` (default): overlapping turns of different speakers stay separate utterances
      (overlapped speech); an overlap of at most :data:`SHORT_OVERLAP` where the later turn
      runs past the earlier one (a reply a moment early, subtitle jitter) is trimmed.
    - ``trim``: the earlier segment ends where the later starts, unless that would leave it
      shorter than :data:`MIN_UTTERANCE` or the later lies inside it (a backchannel): then
      both are kept, overlapping.
    - ``merge``: only one speaker's overlapping segments are joined (as under every policy).
    - ``error``: any overlap is refused, naming both segments.

    Raises :class:`SegmentError` for a non-finite time, ``end <= start`` and an empty result.
    """
    if overlaps not in OVERLAP_POLICIES:
        raise SegmentError(f"unknown overlap policy {overlaps!r}; expected one of "
                           f"{', '.join(OVERLAP_POLICIES)}")
    notices = notices if notices is not None else Notices()
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise SegmentError(f"{where}: the media's duration {duration!r} is not a positive "
                           "finite number of seconds")
    for s in segs:
        if not (math.isfinite(s.start) and math.isfinite(s.end)):
            raise SegmentError(f"{s.source or where}: times must be finite numbers, got "
                               f"{format_time(s.start)} - {format_time(s.end)}")
        if s.end <= s.start:
            raise SegmentError(f"{s.source or where}: end {format_time(s.end)} is not after "
                               f"start {format_time(s.start)}")
    out = list(segs)
    order = sorted(range(len(out)), key=lambda k: (out[k].start, out[k].end))
    unsorted = sum(1 for a, b in itertools.pairwise(order) if b < a)
    if unsorted:
        first = next(out[b].source for a, b in itertools.pairwise(order) if b < a)
        notices.warn(W_SORTED, first, unsorted)
        out = [out[k] for k in order]
    clipped: list[Segment] = []
    for s in out:
        if s.start < 0:
            if s.end <= MIN_SEGMENT:
                notices.warn(W_BEFORE_START, s.source)
                continue
            notices.warn(W_BEFORE_START, s.source)
            s = replace(s, start=0.0)
        if duration is not None:
            if s.start >= duration - MIN_SEGMENT:
                notices.warn(W_AFTER_END, f"{s.source} ({format_time(s.start)}, the media "
                                          f"lasts {format_time(duration)})")
                continue
            if s.end > duration:
                notices.warn(W_CLIPPED, s.source)
                s = replace(s, end=duration)
        clipped.append(s)
    if not clipped:
        lasts = f" (which lasts {format_time(duration)})" if duration is not None else ""
        raise SegmentError(f"{where}: no segment lies within the media{lasts}; is this the "
                           "segment list of another video?")
    out = _resolve_overlaps(clipped, overlaps, notices)
    for s in out:
        if s.duration < MIN_UTTERANCE:
            notices.warn(W_SHORT, s.source)
    return unify_speakers(out, notices)


def _same_speaker(a: Segment, b: Segment) -> bool:
    return a.speaker is not None and b.speaker is not None and \
        speaker_key(a.speaker) == speaker_key(b.speaker)


def _join(a: Segment, b: Segment) -> Segment:
    text = " ".join(t for t in (a.text, b.text) if t) or None
    return replace(a, end=max(a.end, b.end), text=text)


def _resolve_overlaps(segs: list[Segment], policy: str, notices: Notices) -> list[Segment]:
    out: list[Segment] = []
    for b in segs:
        running = [i for i in range(len(out) - 1, -1, -1) if out[i].end > b.start + 1e-9]
        if not running:
            out.append(b)
            continue
        if policy == "error":
            a = out[running[0]]
            raise SegmentError(
                f"{b.source}: segment {format_time(b.start)}-{format_time(b.end)} "
                f"({b.speaker or 'no speaker'}) overlaps the previous one ({a.source}) "
                f"{format_time(a.start)}-{format_time(a.end)} ({a.speaker or 'no speaker'}); "
                "choose --overlaps keep, trim or merge to accept overlapping segments")
        same = next((i for i in running if _same_speaker(out[i], b)), None)
        if same is not None:
            out[same] = _join(out[same], b)
            notices.warn(W_SAME_MERGED if policy != "merge" else W_MERGED, b.source)
            continue
        kept = False
        for i in running:
            a = out[i]
            room = b.start - a.start >= MIN_UTTERANCE
            if policy == "keep":
                cut = room and b.end > a.end and a.end - b.start <= SHORT_OVERLAP
            elif policy == "trim":
                cut = room and b.end > a.end
            else:
                cut = False
            if cut:
                out[i] = replace(a, end=b.start)
                notices.warn(W_TRIMMED, b.source)
            else:
                kept = True
        if kept:
            notices.warn(W_OVERLAP_KEPT, b.source)
        out.append(b)
    return out
