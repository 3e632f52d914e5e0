"""Reading one segment file: its bytes (bounded), its encoding, its format, then the
reader of that format and the tidying (:func:`avafn.segments.tidy.tidy_segments`)."""

from __future__ import annotations

import codecs
import os
import re
import stat
from pathlib import Path

from avafn.notices import Notices
from avafn.segments.base import (
    DEFAULT_MAX_SEGMENTS,
    MAX_BYTES_ENV,
    OVERLAP_POLICIES,
    W_ENCODING,
    Limit,
    Segment,
    SegmentError,
    max_bytes_default,
)
from avafn.segments.subtitles import read_ass, read_subtitles
from avafn.segments.tables import read_csv, read_rttm
from avafn.segments.tidy import tidy_segments
from avafn.segments.transcripts import TXT_LINE, read_json, read_txt

FORMATS = ("csv", "srt", "vtt", "ass", "json", "txt", "rttm")
_EXT = {".csv": "csv", ".tsv": "csv", ".srt": "srt", ".vtt": "vtt", ".webvtt": "vtt",
        ".ass": "ass", ".ssa": "ass", ".json": "json", ".txt": "txt", ".rttm": "rttm"}


def detect_format(path: str | os.PathLike, content: str) -> str:
    """The format of a segment file: by its extension, else by its first lines."""
    ext = Path(path).suffix.lower()
    if ext in _EXT:
        return _EXT[ext]
    head = content[:4096]
    lines = [ln.strip() for ln in head.splitlines() if ln.strip()][:3]
    if not lines:
        raise SegmentError(f"{path}: empty segment file")
    first = lines[0].lstrip("\ufeff")
    if first.startswith("WEBVTT"):
        return "vtt"
    if first.lower() in ("[script info]", "[v4+ styles]", "[v4 styles]", "[events]"):
        return "ass"
    if first.startswith(("{", "[")):
        return "json"
    if first.split()[0] in ("SPEAKER", "SPKR-INFO", "LEXEME", "NON-SPEECH"):
        return "rttm"
    if "-->" in first or (len(lines) > 1 and re.match(r"^\d+$", first) and "-->" in lines[1]):
        return "srt"
    if any(d in first for d in (",", ";", "\t")):
        return "csv"
    if TXT_LINE.match(first):
        return "txt"
    raise SegmentError(
        f"{path}:1: unknown segment format (extension {ext or 'none'!r}); expected one of "
        ".csv (start,end,speaker[,text]; ',' ';' or tab), .srt, .vtt (WebVTT), .ass / .ssa, "
        ".json (whisper / whisperX), .txt ('Name: line' per turn) or .rttm")


def _read_bytes(path: str, max_bytes: int | None) -> bytes:
    """The file's bytes, refused before reading when it holds more than ``max_bytes`` (a
    device such as ``/dev/zero``, which declares no size, is read up to the bound only)."""
    limit = max_bytes_default() if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                data = b""
            else:
                data = f.read(limit + 1)
            size = st.st_size if stat.S_ISREG(st.st_mode) else len(data)
    except FileNotFoundError:
        raise SegmentError(f"{path}: segment file not found") from None
    except IsADirectoryError:
        raise SegmentError(f"{path}: is a folder, not a segment file") from None
    except OSError as e:
        raise SegmentError(f"{path}: cannot read the segment file ({e.strerror})") from None
    if size > limit or len(data) > limit:
        what = f"{size:,} bytes" if stat.S_ISREG(st.st_mode) else f"more than {limit:,} bytes"
        raise SegmentError(
            f"{path}: {what}; a segment file may have at most {limit:,} bytes "
            f"(a subtitle file of a day of speech has about 2 MB; raise the bound with "
            f"${MAX_BYTES_ENV})")
    return data


def _read_text(path: str, notices: Notices, max_bytes: int | None = None) -> str:
    data = _read_bytes(path, max_bytes)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        notices.warn(f"{W_ENCODING} UTF-16", path)
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise SegmentError(f"{path}: starts with a UTF-16 byte-order mark but is not "
                               "UTF-16 text") from None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            if b"\x00" in data:
                raise SegmentError(f"{path}: a binary file, not a segment list (text "
                                   "expected)") from None
            try:
                text = data.decode("cp1252")
                notices.warn(f"{W_ENCODING} Windows-1252", path)
            except UnicodeDecodeError:
                text = data.decode("latin-1")
                notices.warn(f"{W_ENCODING} Latin-1", path)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise SegmentError(f"{path}:{line}: a NUL character; a binary file, not a segment "
                           "list (text expected)")
    return text


def read_segments(path: str | os.PathLike, duration: float | None = None,
                  fmt: str | None = None, file_id: str | None = None, *,
                  overlaps: str = "keep", max_segments: int | None = DEFAULT_MAX_SEGMENTS,
                  notices: Notices | None = None, max_bytes: int | None = None
                  ) -> list[Segment]:
    """Read, tidy and validate the segment list of one video (module docstring).

    ``duration``: the media's length in seconds (segments are clipped to it).
    ``fmt``: force one of :data:`FORMATS` instead of detecting it.
    ``file_id``: RTTM only, which recording to take when the file holds several.
    ``overlaps``: ``keep`` / ``trim`` / ``merge`` / ``error`` (see :func:`tidy_segments`).
    ``max_segments``: refuse a list of more utterances than this (``None``: no limit).
    ``max_bytes``: refuse a larger file before reading it (default
    :data:`DEFAULT_MAX_BYTES`, or ``$AVAFN_MAX_SEGMENT_BYTES``).
    ``notices``: collects the warnings (one kind per line, with counts).
    Untagged cues keep speaker ``None``: see :func:`assign_speakers`.
    """
    if overlaps not in OVERLAP_POLICIES:
        raise SegmentError(f"unknown overlap policy {overlaps!r}; expected one of "
                           f"{', '.join(OVERLAP_POLICIES)}")
    if max_segments is not None and max_segments < 1:
        raise SegmentError(f"--max-segments must be at least 1, got {max_segments}")
    notices = notices if notices is not None else Notices()
    path = str(path)
    content = _read_text(path, notices, max_bytes)
    if fmt is None:
        fmt = detect_format(path, content)
    if fmt not in FORMATS:
        raise SegmentError(f"{path}: unknown segment format {fmt!r}; known: {FORMATS}")
    limit = Limit(path, max_segments)
    if fmt == "csv":
        segs = read_csv(path, content, limit)
    elif fmt == "json":
        segs = read_json(path, content, limit, notices)
    elif fmt == "ass":
        segs = read_ass(path, content, limit, notices)
    elif fmt == "txt":
        segs = read_txt(path, content, limit, notices, duration)
    elif fmt == "rttm":
        segs = read_rttm(path, content, file_id, limit)
    else:
        segs = read_subtitles(path, content, fmt, limit, notices)
    if not segs:
        raise SegmentError(f"{path}: no segments")
    return tidy_segments(segs, duration, overlaps=overlaps, notices=notices, where=path)

