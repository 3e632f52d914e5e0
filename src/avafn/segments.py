"""Segment lists for one conversation video: who speaks when (and, optionally, what).

Formats (chosen by file extension, or by sniffing the content when the extension says nothing):

- **CSV** ``start,end,speaker[,text]``, with or without that header row; times in seconds
  (``12.5``) or clock time (``HH:MM:SS.mmm``, ``MM:SS.mmm``, ``,`` accepted as decimal mark).
- **SRT** / **WebVTT** subtitles; every cue must name its speaker in one of the forms
  ``Speaker: text``, ``<v Speaker>text`` (WebVTT voice span), ``[Speaker] text``,
  ``(Speaker) text`` (an optional leading ``- `` is allowed).
- **RTTM** (diarizer output): ``SPEAKER file 1 start dur <NA> <NA> spk <NA> <NA>``; other
  record types (``SPKR-INFO``, ...) are ignored.

:func:`read_segments` validates the list and raises :class:`SegmentError` naming the file and
line for: an unknown format or speaker tag, ``end <= start``, unsorted or overlapping segments
(naming both), and segments outside the video when its duration is given.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from avafn.errors import UserError

FORMATS = ("csv", "srt", "vtt", "rttm")
_EXT = {".csv": "csv", ".tsv": "csv", ".srt": "srt", ".vtt": "vtt", ".webvtt": "vtt",
        ".rttm": "rttm"}


class SegmentError(UserError):
    """A segment list that cannot be read or does not describe a valid conversation."""


@dataclass(frozen=True)
class Segment:
    """One utterance of the conversation: ``[start, end)`` seconds in the video."""

    start: float
    end: float
    speaker: str
    text: str | None = None
    source: str = ""  # "file:line" the segment was read from

    @property
    def duration(self) -> float:
        return self.end - self.start


# --------------------------------------------------------------------------- time parsing
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)$")


def parse_time(s: str) -> float:
    """Seconds from ``"12.5"``, ``"00:00:12.500"``, ``"00:12,5"``; raises ``ValueError``."""
    s = s.strip()
    if not s:
        raise ValueError("empty time")
    m = _CLOCK.match(s)
    if m:
        h, mnt, sec = m.group(1), m.group(2), m.group(3).replace(",", ".")
        if int(mnt) >= 60 or float(sec) >= 60:
            raise ValueError(f"invalid clock time {s!r}")
        return int(h or 0) * 3600 + int(mnt) * 60 + float(sec)
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"not a time: {s!r} (expected seconds or HH:MM:SS.mmm)") from None
    if not math.isfinite(v):
        raise ValueError(f"not a finite time: {s!r}")
    return v


def format_time(t: float) -> str:
    """``HH:MM:SS.mmm`` (for reports and messages)."""
    ms = round(t * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


# --------------------------------------------------------------------------- speaker tags
_SPEAKER_NAME = r"[^\W\d_][\w .'\-]{0,39}|[\w\-]{1,40}"
_TAG_FORMS = (
    re.compile(r"^<v(?:\.[\w.\-]+)?\s+([^>]+)>\s*(.*?)(?:</v>)?\s*$", re.DOTALL),  # <v Speaker>text
    re.compile(r"^\[([^\]\n]{1,40})\]\s*:?\s*(.*)$", re.DOTALL),  # [Speaker] text
    re.compile(r"^\(([^)\n]{1,40})\)\s*:?\s*(.*)$", re.DOTALL),  # (Speaker) text
    re.compile(rf"^({_SPEAKER_NAME})\s*:\s+(.*)$", re.DOTALL),  # Speaker: text
    re.compile(rf"^({_SPEAKER_NAME})\s*:\s*$", re.DOTALL),  # Speaker:   (no text)
)


def split_speaker(cue_text: str) -> tuple[str, str] | None:
    """``(speaker, text)`` from a subtitle cue with a speaker tag, ``None`` if it has none."""
    t = cue_text.strip()
    t = re.sub(r"^-\s+", "", t)
    for rx in _TAG_FORMS:
        m = rx.match(t)
        if m:
            speaker = m.group(1).strip()
            text = m.group(2).strip() if m.lastindex and m.lastindex >= 2 else ""
            text = re.sub(r"</?[a-z][^>]*>", "", text).strip()  # drop <i>, </v>, ... markup
            if speaker:
                return speaker, text
    return None


# --------------------------------------------------------------------------- readers
def detect_format(path: str | os.PathLike, content: str) -> str:
    ext = Path(path).suffix.lower()
    if ext in _EXT:
        return _EXT[ext]
    lines = [ln.strip() for ln in content.splitlines() if ln.strip()]
    if not lines:
        raise SegmentError(f"{path}: empty segment file")
    first = lines[0].lstrip("\ufeff")
    if first.startswith("WEBVTT"):
        return "vtt"
    if first.split()[0] in ("SPEAKER", "SPKR-INFO", "LEXEME", "NON-SPEECH"):
        return "rttm"
    if len(lines) > 1 and re.match(r"^\d+$", first) and "-->" in lines[1]:
        return "srt"
    if "," in first:
        return "csv"
    raise SegmentError(
        f"{path}:1: unknown segment format (extension {ext or 'none'!r}); expected one of "
        ".csv (start,end,speaker[,text]), .srt, .vtt (WebVTT) or .rttm"
    )


def _read_csv(path: str, content: str) -> list[Segment]:
    first_line = content.splitlines()[0] if content.strip() else ""
    delim = "\t" if "\t" in first_line and "," not in first_line else ","
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delim)
    cols = {"start": 0, "end": 1, "speaker": 2, "text": 3}
    header = False
    out: list[Segment] = []
    first = True
    while True:
        lineno = reader.line_num + 1  # where the record starts (a quoted field may span lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise SegmentError(f"{path}:{lineno}: unreadable CSV ({e})") from None
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if first:
            first = False
            head = [c.strip().lower().lstrip("\ufeff") for c in row]
            if "start" in head or "speaker" in head:
                missing = [k for k in ("start", "end", "speaker") if k not in head]
                if missing:
                    raise SegmentError(
                        f"{path}:{lineno}: CSV header {row} lacks column(s) {missing}; "
                        "expected start,end,speaker[,text]")
                cols = {k: head.index(k) for k in ("start", "end", "speaker", "text")
                        if k in head}
                header = True
                continue
        need = max(cols["start"], cols["end"], cols["speaker"]) + 1
        if len(row) < need:
            raise SegmentError(
                f"{path}:{lineno}: {len(row)} column(s), expected start,end,speaker[,text]: {row}")
        try:
            start, end = parse_time(row[cols["start"]]), parse_time(row[cols["end"]])
        except ValueError as e:
            raise SegmentError(f"{path}:{lineno}: {e}") from None
        speaker = row[cols["speaker"]].strip()
        if not speaker:
            raise SegmentError(f"{path}:{lineno}: empty speaker")
        text = None
        if "text" in cols and cols["text"] < len(row):
            # without a header, an unquoted text may contain the delimiter: keep all of it
            parts = row[cols["text"]:] if not header else [row[cols["text"]]]
            text = delim.join(parts).strip() or None
        out.append(Segment(start, end, speaker, text, f"{path}:{lineno}"))
    return out


_ARROW = re.compile(r"^\s*(\S+)\s+-->\s+(\S+)(?:\s+.*)?$")


def _read_subtitles(path: str, content: str, fmt: str) -> list[Segment]:
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[Segment] = []
    i, n = 0, len(lines)
    if fmt == "vtt":
        if not lines or not lines[0].lstrip("\ufeff").startswith("WEBVTT"):
            raise SegmentError(f"{path}:1: a WebVTT file must start with 'WEBVTT'")
        i = 1
    while i < n:
        line = lines[i].strip().lstrip("\ufeff")
        if not line:
            i += 1
            continue
        if fmt == "vtt" and line.split(" ")[0] in ("NOTE", "STYLE", "REGION"):
            while i < n and lines[i].strip():  # a block runs to the next blank line
                i += 1
            continue
        # optional cue identifier (SRT: a number; VTT: any line without -->)
        if "-->" not in line:
            if i + 1 < n and "-->" in lines[i + 1]:
                i += 1
                line = lines[i].strip()
            else:
                raise SegmentError(
                    f"{path}:{i + 1}: expected a cue timing line 'start --> end', got {line!r}")
        m = _ARROW.match(line)
        if not m:
            raise SegmentError(f"{path}:{i + 1}: malformed cue timing line {line!r}")
        try:
            start, end = parse_time(m.group(1)), parse_time(m.group(2))
        except ValueError as e:
            raise SegmentError(f"{path}:{i + 1}: {e}") from None
        cue_line = i + 1
        i += 1
        body: list[str] = []
        while i < n and lines[i].strip():
            body.append(lines[i].strip())
            i += 1
        if not body:
            raise SegmentError(f"{path}:{cue_line}: cue without text (no speaker tag)")
        tagged = split_speaker(body[0])
        if tagged is None:
            raise SegmentError(
                f"{path}:{cue_line + 1}: unknown speaker format in cue {body[0]!r}; expected "
                "'Speaker: text', '<v Speaker>text', '[Speaker] text' or '(Speaker) text'")
        speaker, first_text = tagged
        rest = [re.sub(r"</?[a-z][^>]*>", "", b).strip() for b in body[1:]]
        text = " ".join([t for t in [first_text, *rest] if t]) or None
        out.append(Segment(start, end, speaker, text, f"{path}:{cue_line}"))
    return out


_RTTM_TYPES = {"SPEAKER", "SPKR-INFO", "LEXEME", "NON-LEX", "NON-SPEECH", "FILLER", "NOSCORE",
               "NO_RT_METADATA", "SEGMENT", "A/P", "IP", "SU", "CB", "EDIT"}


def _read_rttm(path: str, content: str, file_id: str | None) -> list[Segment]:
    out: list[Segment] = []
    files: dict[str, int] = {}
    for lineno, raw in enumerate(content.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";;")):
            continue
        f = line.split()
        if f[0] not in _RTTM_TYPES:
            raise SegmentError(f"{path}:{lineno}: unknown RTTM record type {f[0]!r}")
        if f[0] != "SPEAKER":
            continue
        if len(f) < 8:
            raise SegmentError(
                f"{path}:{lineno}: RTTM SPEAKER line needs at least 8 fields "
                f"(SPEAKER file chan start dur <NA> <NA> speaker ...), got {len(f)}")
        if file_id is not None and f[1] != file_id:
            continue
        files.setdefault(f[1], lineno)
        try:
            start, dur = parse_time(f[3]), float(f[4])
        except ValueError as e:
            raise SegmentError(f"{path}:{lineno}: {e}") from None
        speaker = f[7]
        if speaker in ("<NA>", ""):
            raise SegmentError(f"{path}:{lineno}: RTTM SPEAKER line without a speaker name")
        out.append(Segment(start, start + dur, speaker, None, f"{path}:{lineno}"))
    if len(files) > 1:
        raise SegmentError(
            f"{path}: RTTM holds segments of several recordings {sorted(files)}; "
            "pass file_id= to pick one")
    return out


def read_segments(path: str | os.PathLike, duration: float | None = None,
                  fmt: str | None = None, file_id: str | None = None) -> list[Segment]:
    """Read and validate the segment list of one video.

    ``duration``: the video's length in seconds; segments ending after it are errors.
    ``fmt``: force ``csv`` / ``srt`` / ``vtt`` / ``rttm`` instead of detecting it.
    ``file_id``: RTTM only, which recording to take when the file holds several.
    """
    path = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SegmentError(f"{path}: segment file not found") from None
    except UnicodeDecodeError as e:
        raise SegmentError(f"{path}: not UTF-8 text ({e})") from None
    if fmt is None:
        fmt = detect_format(path, content)
    if fmt not in FORMATS:
        raise SegmentError(f"{path}: unknown segment format {fmt!r}; known: {FORMATS}")
    if fmt == "csv":
        segs = _read_csv(path, content)
    elif fmt == "rttm":
        segs = _read_rttm(path, content, file_id)
    else:
        segs = _read_subtitles(path, content, fmt)
    validate_segments(segs, duration, where=path)
    return segs


def validate_segments(segs: list[Segment], duration: float | None = None,
                      where: str = "segments", tol: float = 1e-6) -> None:
    """Raise :class:`SegmentError` for an empty list, ``end <= start``, a segment outside
    ``[0, duration]``, unsorted or overlapping segments (naming both lines)."""
    if not segs:
        raise SegmentError(f"{where}: no segments")
    for s in segs:
        if s.start < 0:
            raise SegmentError(f"{s.source}: segment starts before the video ({s.start:.3f} s)")
        if s.end <= s.start:
            raise SegmentError(
                f"{s.source}: end {format_time(s.end)} is not after start {format_time(s.start)}")
        if duration is not None and s.end > duration + 0.05:
            raise SegmentError(
                f"{s.source}: segment {format_time(s.start)}-{format_time(s.end)} lies outside "
                f"the video, which lasts {format_time(duration)}")
    for a, b in itertools.pairwise(segs):
        if b.start < a.start - tol:
            raise SegmentError(
                f"{b.source}: segments are not sorted by start time: this one starts at "
                f"{format_time(b.start)}, before the previous one ({a.source}) at "
                f"{format_time(a.start)}")
        if b.start < a.end - tol:
            raise SegmentError(
                f"{b.source}: segment {format_time(b.start)}-{format_time(b.end)} ({b.speaker}) "
                f"overlaps the previous one ({a.source}) {format_time(a.start)}-"
                f"{format_time(a.end)} ({a.speaker}); one utterance at a time is expected")


def speaker_indices(segs: list[Segment]) -> dict[str, int]:
    """Party index of each speaker, in order of first appearance (the model's convention)."""
    idx: dict[str, int] = {}
    for s in segs:
        idx.setdefault(s.speaker, len(idx))
    return idx
