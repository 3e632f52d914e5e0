"""Transcript readers: whisper / whisperX JSON and plain ``Name: line`` text."""

from __future__ import annotations

import json
import re

from avafn.io import parse_time
from avafn.notices import Notices
from avafn.segments.base import W_EMPTY, Limit, Segment, SegmentError
from avafn.segments.cues import Turn, name_like, parse_cue


def read_json(path: str, content: str, limit: Limit, notices: Notices) -> list[Segment]:
    """whisper / whisperX output: ``{"segments": [{"start", "end", "text"[, "speaker"]}]}``,
    or a bare list of such segments."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError as e:
        raise SegmentError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected whisper / "
                           "whisperX output ({\"segments\": [{\"start\", \"end\", \"text\"}]})"
                           ) from None
    except RecursionError:
        raise SegmentError(f"{path}: JSON nested too deeply; expected whisper / whisperX "
                           "output ({\"segments\": [{\"start\", \"end\", \"text\"}]})"
                           ) from None
    segs = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(segs, list):
        raise SegmentError(f"{path}: JSON without a \"segments\" list; expected whisper / "
                           "whisperX output ({\"segments\": [{\"start\", \"end\", \"text\"}]})")
    out: list[Segment] = []
    for k, seg in enumerate(segs):
        where = f"{path}:segments[{k}]"
        if not isinstance(seg, dict):
            raise SegmentError(f"{where}: expected an object with start, end, text")
        limit.add(f"segments[{k}]")
        try:
            start, end = (parse_time(str(seg[f])) for f in ("start", "end"))
        except KeyError as e:
            raise SegmentError(f"{where}: no {e.args[0]!r} time") from None
        except ValueError as e:
            raise SegmentError(f"{where}: {e}") from None
        spk = seg.get("speaker")
        text = seg.get("text")
        speaker = str(spk).strip() if isinstance(spk, str | int) and str(spk).strip() else None
        turns = parse_cue(str(text).splitlines(), where, notices) if text else []
        if speaker is not None or len(turns) != 1:
            turns = [Turn(speaker, " ".join(t.text for t in turns))] if turns else []
        if not turns or not turns[0].text:
            notices.warn(W_EMPTY, where)
            continue
        out.append(Segment(start, end, turns[0].speaker, turns[0].text, where))
    return out


#: a transcript line: optional time ``[00:01:02]`` / ``00:01:02.5``, then ``Name: text``
TXT_LINE = re.compile(r"^(?:\[?(\d{1,2}(?::\d{1,2}){1,2}(?:[.,]\d+)?)\]?[ \t]+)?"
                       r"([^\W\d_][\w .'&\-]{0,39}?)[ \t]{0,3}:[ \t]*(.*)$")
#: seconds per turn of a transcript without times (its turns are numbered 0, 1, 2, ...)
TXT_TURN_SECONDS = 1.0


def read_txt(path: str, content: str, limit: Limit, notices: Notices,
              duration: float | None) -> list[Segment]:
    """A plain transcript: ``Name: line`` starts a turn (other lines continue it), with an
    optional leading time ``[HH:MM:SS]`` on each turn. Without times, turn k spans
    ``[k, k + 1)`` seconds: such a transcript serves a text-only run without media."""
    turns: list[list] = []  # [lineno, time or None, speaker or None, [text lines]]
    for lineno, raw in enumerate(content.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        m = TXT_LINE.match(line)
        if m and name_like(m.group(2), True):
            try:
                t = parse_time(m.group(1)) if m.group(1) else None
            except ValueError as e:
                raise SegmentError(f"{path}:{lineno}: {e}") from None
            limit.add(lineno)
            turns.append([lineno, t, m.group(2).strip(), [m.group(3)]])
        elif turns:
            turns[-1][3].append(line)
        else:
            limit.add(lineno)
            turns.append([lineno, None, None, [line]])
    timed = [t for t in turns if t[1] is not None]
    if timed and len(timed) != len(turns):
        first = next(t[0] for t in turns if t[1] is None)
        raise SegmentError(f"{path}:{first}: a turn without a time in a transcript whose other "
                           "turns have one ([HH:MM:SS] Name: text)")
    if not timed and duration is not None:
        raise SegmentError(f"{path}: a transcript without times cannot be aligned with the "
                           "media; give it alone (--segments, a text-only run) or add a time "
                           "to each turn ('[00:01:02] Name: text')")
    out: list[Segment] = []
    for k, (lineno, t, spk, lines) in enumerate(turns):
        where = f"{path}:{lineno}"
        cue = parse_cue([" ".join(lines)], where, notices)
        text = " ".join(c.text for c in cue if c.text)
        if not text:
            notices.warn(W_EMPTY, where)
            continue
        if timed:
            nxt = turns[k + 1][1] if k + 1 < len(turns) else None
            start = t
            end = nxt if nxt is not None and nxt > t else t + max(1.0, 0.4 * len(text.split()))
        else:
            start, end = k * TXT_TURN_SECONDS, (k + 1) * TXT_TURN_SECONDS
        out.append(Segment(start, end, spk, text, where))
    return out

