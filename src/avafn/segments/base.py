"""The segment type and what every reader shares: limits, errors, warning kinds,
provenance (where a segment's speaker and text came from)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from avafn.errors import UserError, quote

#: what to do with two segments that overlap in time (see :func:`tidy_segments`)
OVERLAP_POLICIES = ("keep", "trim", "merge", "error")
#: an overlap of different speakers up to this long (seconds) is trimmed under ``keep``
SHORT_OVERLAP = 0.5
#: trimming never leaves a segment shorter than this (seconds): both are kept instead
MIN_UTTERANCE = 0.3
#: segments one video may have, checked while the list is read (``max_segments`` raises it)
DEFAULT_MAX_SEGMENTS = 5000
#: bytes a segment file may have, checked before it is read; raised by ``max_bytes=`` or the
#: environment variable ``AVAFN_MAX_SEGMENT_BYTES`` (a day of dense subtitles is about 2 MB)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_BYTES_ENV = "AVAFN_MAX_SEGMENT_BYTES"
#: the speaker of untagged cues when no diarizer is available
UNKNOWN_SPEAKER = "unknown"
#: a segment shorter than this (seconds) after trimming is dropped
MIN_SEGMENT = 0.01

# warning kinds (one line each, with a count)
W_MARKUP = "markup dropped from cues (<i>, <font>, {\\an8}, ...)"
W_SOUND = "sound descriptions dropped ([music], (laughs), ♪...♪)"
W_SOUND_ONLY = "cues holding only sound descriptions dropped"
W_EMPTY = "empty cues dropped"
W_SPLIT = "cues with several speakers (dialogue dashes) split"
W_SORTED = "segments out of time order, sorted"
W_CLIPPED = "segments running past the end of the media, clipped"
W_AFTER_END = "segments starting after the end of the media, dropped"
W_BEFORE_START = "segments starting before 0 s, clipped"
W_TRIMMED = "overlapping segments trimmed (the earlier one ends where the next starts)"
W_MERGED = "overlapping segments merged into one"
W_OVERLAP_KEPT = ("overlapping segments of different speakers kept as separate utterances "
                  "(overlapped speech)")
W_SAME_MERGED = "overlapping segments of one speaker joined"
W_SHORT = (f"segments shorter than {MIN_UTTERANCE} s: too little for reliable audio / face "
           "features (their text, if any, still counts)")
W_SPELLINGS = "speaker spellings merged (case / spacing)"
W_ENCODING = "file is not UTF-8, decoded as"



class SegmentError(UserError):
    """A segment list that cannot be read or does not describe a valid conversation."""


def max_bytes_default() -> int:
    """:data:`DEFAULT_MAX_BYTES`, or ``$AVAFN_MAX_SEGMENT_BYTES`` when set."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        v = int(float(raw))
    except ValueError:
        raise SegmentError(f"${MAX_BYTES_ENV}={quote(raw)}: expected a number of bytes") from None
    if v < 1:
        raise SegmentError(f"${MAX_BYTES_ENV}={raw}: expected a positive number of bytes")
    return v


@dataclass(frozen=True)
class Segment:
    """One utterance of the conversation: ``[start, end)`` seconds in the media.

    ``speaker`` is ``None`` when the file does not say (see :func:`assign_speakers`).
    """

    start: float
    end: float
    speaker: str | None
    text: str | None = None
    source: str = ""  # "file:line" the segment was read from
    #: where the speaker came from: "tag" (the input named it), "diarization" (guessed from
    #: the audio), "unknown"; None = derived from ``speaker`` (see :attr:`speaker_origin`)
    speaker_source: str | None = None
    #: how sure the speaker assignment is, in [0, 1] (None: not measured, e.g. a tag)
    speaker_confidence: float | None = None
    #: where the text came from: "subtitle" (the input file), "asr" (speech recognition),
    #: "none"; None = derived from ``text`` (see :attr:`text_origin`)
    text_source: str | None = None
    #: the dialogue window this utterance belongs to when a long input is split (0 = first)
    window: int = 0

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def speaker_origin(self) -> str:
        """:func:`speaker_origin` of this segment."""
        return speaker_origin(self.speaker_source, self.speaker)

    @property
    def text_origin(self) -> str:
        """:func:`text_origin` of this segment."""
        return text_origin(self.text_source, self.text)


def speaker_origin(source: str | None, speaker: str | None) -> str:
    """Where a speaker came from: ``source`` when recorded, else "tag" / "unknown" from whether
    a speaker is named."""
    if source:
        return source
    return "unknown" if speaker in (None, "", UNKNOWN_SPEAKER) else "tag"


def text_origin(source: str | None, text: str | None) -> str:
    """Where a text came from: ``source`` when recorded, else "subtitle" / "none" from whether
    there is text."""
    if source:
        return source
    return "subtitle" if text else "none"


class Limit:
    """Counts the segments a file gives (the turns a cue splits into included) while it is
    read; raises past ``max_segments``."""

    def __init__(self, path: str, max_segments: int | None) -> None:
        self.path, self.max, self.n = path, max_segments, 0

    def add(self, lineno: int | str, count: int = 1) -> None:
        self.n += count
        if self.max is not None and self.n > self.max:
            raise SegmentError(
                f"{self.path}:{lineno}: more than {self.max} segments; one video may have at "
                f"most {self.max} utterances by default (split the media, or raise the limit "
                "with --max-segments N)")

