"""Segment lists for one conversation: who speaks when (and, optionally, what).

Formats (chosen by file extension, or by sniffing the content when the extension says nothing):

- **CSV** ``start,end,speaker[,text]``, with or without that header row; times in seconds
  (``12.5``) or clock time (``HH:MM:SS.mmm``, ``MM:SS.mmm``, ``,`` accepted as decimal mark).
  An empty speaker cell means "speaker not known".
- **SRT** / **WebVTT** subtitles as they come: a byte-order mark, CRLF line ends, a missing or
  non-numeric SRT index, WebVTT header lines, ``NOTE`` / ``STYLE`` / ``REGION`` blocks and cue
  settings are accepted; a file that is not UTF-8 is read as UTF-16 (with its BOM) or
  Windows-1252, with a warning.
- **RTTM** (diarizer output): ``SPEAKER file 1 start dur <NA> <NA> spk <NA> <NA>``; other
  record types (``SPKR-INFO``, ...) are ignored.

What a subtitle cue may hold, and what becomes of it:

- **Speaker tags** ``Name: text``, ``NAME (ON PHONE): text``, ``<v Name>text``, ``[Name] text``,
  ``(Name) text``, each optionally after ``- `` or ``>>`` (broadcast captions), where a name
  in capitals needs no colon (``>> JOHN Hello there.``). A cue whose
  lines start with dialogue dashes (``- Hi.`` / ``- Hello.``) holds several speakers: it is
  split, its time shared in proportion to the text lengths. A cue without a tag (or a bare
  ``>>``) has speaker ``None``: :func:`assign_speakers` gives it one (from a diarizer's turns,
  else :data:`UNKNOWN_SPEAKER`).
- **One name per speaker**: spellings that differ only in case or spacing (``ALICE``,
  ``Alice``, ``alice``) are one speaker, shown in a readable form (a mixed-case spelling when
  the file has one, else the name in title case: ``DR. GREEN`` -> ``Dr. Green``).
- **Dropped, each kind counted** (one warning line per kind, :class:`avafn.notices.Notices`):
  markup (``<i>``, ``<font ...>``, ``{\\an8}``, WebVTT timestamps and classes), sound
  descriptions (``[music]``, ``(laughs)``, ``(DOOR SLAMS)``, ``♪ ... ♪``) and the cues left
  empty by that.

:func:`read_segments` then tidies the list (:func:`tidy_segments`): unsorted segments are
sorted, segments past the end of the media clipped (or dropped when they start after it),
overlaps resolved by the ``overlaps`` policy (default ``keep``: overlapping turns of
different speakers stay separate utterances, only short overlaps are trimmed; one speaker's
overlapping segments are joined; different speakers are never merged), each with a counted
warning. Still refused with a
:class:`SegmentError` naming file and line: an unknown format, an unreadable time, a time or
duration that is not a finite number, ``end <= start``, more segments than ``max_segments``
(checked while reading, before anything else is done with them), and any overlap under the
``error`` policy.

This package is the public entry point (its names are exported here); the code is split by
concern: :mod:`~avafn.segments.base` (the :class:`Segment` type and its provenance, limits,
warning kinds), :mod:`~avafn.segments.cues` (the text of a subtitle cue), one reader module
per format family (:mod:`~avafn.segments.subtitles`: SRT, WebVTT, ASS;
:mod:`~avafn.segments.transcripts`: whisper JSON, plain text; :mod:`~avafn.segments.tables`:
CSV, RTTM), :mod:`~avafn.segments.reading` (bytes, encoding, format detection,
:func:`read_segments`), :mod:`~avafn.segments.tidy` (sorting, clipping, overlaps) and
:mod:`~avafn.segments.speakers` (names, untagged segments, party indices). Times are read by
:func:`avafn.io.parse_time`, the one time parser.
"""

from __future__ import annotations

from avafn.errors import (
    QUOTE_CHARS,
    quote,
)
from avafn.io import (
    format_time,
    parse_time,
)
from avafn.segments.base import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_SEGMENTS,
    MAX_BYTES_ENV,
    MIN_SEGMENT,
    MIN_UTTERANCE,
    OVERLAP_POLICIES,
    SHORT_OVERLAP,
    UNKNOWN_SPEAKER,
    W_AFTER_END,
    W_BEFORE_START,
    W_CLIPPED,
    W_EMPTY,
    W_ENCODING,
    W_MARKUP,
    W_MERGED,
    W_OVERLAP_KEPT,
    W_SAME_MERGED,
    W_SHORT,
    W_SORTED,
    W_SOUND,
    W_SOUND_ONLY,
    W_SPELLINGS,
    W_SPLIT,
    W_TRIMMED,
    Segment,
    SegmentError,
    max_bytes_default,
    speaker_origin,
    text_origin,
)
from avafn.segments.cues import (
    parse_cue,
    split_speaker,
)
from avafn.segments.reading import (
    FORMATS,
    detect_format,
    read_segments,
)
from avafn.segments.speakers import (
    W_DIARIZED,
    W_UNKNOWN,
    Diarizer,
    assign_speakers,
    speaker_indices,
    speaker_key,
    unify_speakers,
    untagged,
)
from avafn.segments.tidy import (
    tidy_segments,
)
from avafn.segments.transcripts import (
    TXT_TURN_SECONDS,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SEGMENTS",
    "FORMATS",
    "MAX_BYTES_ENV",
    "MIN_SEGMENT",
    "MIN_UTTERANCE",
    "OVERLAP_POLICIES",
    "QUOTE_CHARS",
    "SHORT_OVERLAP",
    "TXT_TURN_SECONDS",
    "UNKNOWN_SPEAKER",
    "W_AFTER_END",
    "W_BEFORE_START",
    "W_CLIPPED",
    "W_DIARIZED",
    "W_EMPTY",
    "W_ENCODING",
    "W_MARKUP",
    "W_MERGED",
    "W_OVERLAP_KEPT",
    "W_SAME_MERGED",
    "W_SHORT",
    "W_SORTED",
    "W_SOUND",
    "W_SOUND_ONLY",
    "W_SPELLINGS",
    "W_SPLIT",
    "W_TRIMMED",
    "W_UNKNOWN",
    "Diarizer",
    "Segment",
    "SegmentError",
    "assign_speakers",
    "detect_format",
    "format_time",
    "max_bytes_default",
    "parse_cue",
    "parse_time",
    "quote",
    "read_segments",
    "speaker_indices",
    "speaker_key",
    "speaker_origin",
    "split_speaker",
    "text_origin",
    "tidy_segments",
    "unify_speakers",
    "untagged",
]
