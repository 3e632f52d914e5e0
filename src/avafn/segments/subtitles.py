"""Subtitle readers: SRT, WebVTT and Advanced SubStation Alpha (.ass / .ssa)."""

from __future__ import annotations

import itertools
import re

from avafn.io import parse_time
from avafn.notices import Notices
from avafn.segments.base import W_EMPTY, W_SOUND_ONLY, W_SPLIT, Limit, Segment, SegmentError, quote
from avafn.segments.cues import Turn, parse_cue


def read_ass(path: str, content: str, limit: Limit, notices: Notices) -> list[Segment]:
    """Advanced SubStation Alpha (.ass) / SubStation Alpha (.ssa): the ``Dialogue:`` lines of
    ``[Events]``, fields named by its ``Format:`` line; ``Name`` is the speaker."""
    fields = ["layer", "start", "end", "style", "name", "marginl", "marginr", "marginv",
              "effect", "text"]
    section = ""
    out: list[Segment] = []
    for lineno, raw in enumerate(content.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")
        if line.startswith("[") and line.endswith("]"):
            section = line.lower()
            continue
        if section != "[events]" or ":" not in line:
            continue
        kind, _, rest = line.partition(":")
        kind = kind.strip().lower()
        if kind == "format":
            fields = [f.strip().lower() for f in rest.split(",")]
            if not {"start", "end", "text"} <= set(fields) or fields[-1] != "text":
                raise SegmentError(f"{path}:{lineno}: [Events] Format line must name Start, "
                                   f"End and Text (Text last), got {quote(rest.strip())}")
            continue
        if kind != "dialogue":
            continue  # Comment:, Picture:, Sound:, ...
        values = rest.split(",", len(fields) - 1)
        if len(values) != len(fields):
            raise SegmentError(f"{path}:{lineno}: Dialogue line with {len(values)} fields, "
                               f"expected {len(fields)} ({', '.join(fields)})")
        row = dict(zip(fields, (v.strip() for v in values)))
        try:
            start, end = parse_time(row["start"]), parse_time(row["end"])
        except ValueError as e:
            raise SegmentError(f"{path}:{lineno}: {e}") from None
        where = f"{path}:{lineno}"
        body = re.sub(r"\\[Nn]", "\n", row["text"]).replace("\\h", " ").splitlines()
        turns = parse_cue(body, where, notices)
        name = row.get("name") or None
        if name is not None and turns:
            turns = [Turn(name, " ".join(t.text for t in turns))]
        if not turns:
            notices.warn(W_SOUND_ONLY if row["text"].strip() else W_EMPTY, where)
            continue
        limit.add(lineno, len(turns))
        if len(turns) > 1:
            notices.warn(W_SPLIT, where)
        out += _share_time(start, end, turns, where)
    return out


_ARROW = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)(?:\s+.*)?$")


def read_subtitles(path: str, content: str, fmt: str, limit: Limit,
                    notices: Notices) -> list[Segment]:
    lines = content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[Segment] = []
    i, n = 0, len(lines)
    if fmt == "vtt":
        if not lines or not lines[0].lstrip("\ufeff").startswith("WEBVTT"):
            raise SegmentError(f"{path}:1: a WebVTT file must start with 'WEBVTT'")
        i = 1
        while i < n and lines[i].strip() and "-->" not in lines[i]:
            i += 1  # header lines (Kind:, Language:, X-TIMESTAMP-MAP=...) up to a blank line
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
                    f"{path}:{i + 1}: expected a cue timing line 'start --> end', got "
                    f"{quote(line)}")
        m = _ARROW.match(line)
        if not m:
            raise SegmentError(f"{path}:{i + 1}: malformed cue timing line {quote(line)}")
        try:
            start, end = parse_time(m.group(1)), parse_time(m.group(2))
        except ValueError as e:
            raise SegmentError(f"{path}:{i + 1}: {e}") from None
        cue_line = i + 1
        i += 1
        body: list[str] = []
        while i < n and lines[i].strip():
            if _ARROW.match(lines[i]) and "-->" in lines[i]:  # next cue without a blank line
                if body and re.fullmatch(r"\d+", body[-1].strip()):
                    body.pop()  # that cue's SRT index
                break
            body.append(lines[i])
            i += 1
        where = f"{path}:{cue_line}"
        turns = parse_cue(body, where, notices)
        if not turns:
            notices.warn(W_SOUND_ONLY if any(ln.strip() for ln in body) else W_EMPTY, where)
            continue
        limit.add(cue_line, len(turns))  # each turn becomes an utterance
        if len(turns) > 1:
            notices.warn(W_SPLIT, where)
        out += _share_time(start, end, turns, where)
    return out


def _share_time(start: float, end: float, turns: list[Turn], where: str) -> list[Segment]:
    """One segment per turn of a cue, its time shared in proportion to the text lengths."""
    if len(turns) == 1 or end <= start:
        t = turns[0] if len(turns) == 1 else Turn(turns[0].speaker,
                                                   " ".join(x.text for x in turns))
        return [Segment(start, end, t.speaker, t.text or None, where)]
    weights = [max(len(t.text), 1) for t in turns]
    total = sum(weights)
    bounds = [start + (end - start) * c / total for c in itertools.accumulate(weights)]
    bounds = [start, *bounds[:-1], end]
    return [Segment(a, b, t.speaker, t.text or None, where)
            for a, b, t in zip(bounds, bounds[1:], turns)]

