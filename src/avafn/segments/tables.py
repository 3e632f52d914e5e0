"""Table readers: CSV (``start,end,speaker[,text]``, MELD's own columns) and RTTM."""

from __future__ import annotations

import csv
import io
import math

from avafn.io import parse_time
from avafn.segments.base import Limit, Segment, SegmentError, quote

#: header names accepted for each column (lower case, spaces and underscores removed);
#: MELD's own CSVs (Utterance, Speaker, StartTime, EndTime) read as they are
_CSV_ALIASES = {
    "start": ("start", "starttime", "begin", "from", "tstart", "startsec", "startseconds"),
    "end": ("end", "endtime", "stop", "to", "tend", "endsec", "endseconds"),
    "speaker": ("speaker", "name", "character", "who", "spk", "speakername"),
    "text": ("text", "utterance", "transcript", "line", "sentence", "caption"),
}
_DIALOGUE_COLS = ("dialogueid", "dialogue", "conversationid", "conversation")


def _header_columns(row: list[str]) -> tuple[dict[str, int], int | None] | None:
    """Column index of each field when ``row`` is a header (``None`` if it is data), and the
    dialogue-id column if there is one."""
    head = ["".join(c.strip().lstrip("\ufeff").lower().replace("_", "").split()) for c in row]
    cols = {k: next(head.index(a) for a in names if a in head)
            for k, names in _CSV_ALIASES.items() if any(a in head for a in names)}
    try:
        parse_time(row[0])
        return None  # data: a header's first cell is no time
    except ValueError:
        pass
    if not cols:
        return None
    dia = next((head.index(a) for a in _DIALOGUE_COLS if a in head), None)
    return cols, dia


def read_csv(path: str, content: str, limit: Limit) -> list[Segment]:
    first_line = next((ln for ln in content.splitlines() if ln.strip()), "")
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    delim = max(counts, key=lambda d: (counts[d], d == ","))
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delim)
    cols = {"start": 0, "end": 1, "speaker": 2, "text": 3}
    header = False
    dia_col: int | None = None
    dialogues: dict[str, int] = {}
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
            found = _header_columns(row)
            if found is not None:
                named, dia_col = found
                missing = [k for k in ("start", "end", "speaker") if k not in named]
                if missing:
                    raise SegmentError(
                        f"{path}:{lineno}: CSV header {quote(delim.join(row))} lacks "
                        f"column(s) {missing}; expected start{delim}end{delim}speaker"
                        f"[{delim}text] (or MELD's StartTime, EndTime, Speaker, Utterance)")
                cols, header = named, True
                continue
        need = max(cols["start"], cols["end"]) + 1
        if len(row) < need or (len(row) <= cols["speaker"] and not header):
            raise SegmentError(
                f"{path}:{lineno}: {len(row)} column(s), expected start{delim}end{delim}"
                f"speaker[{delim}text]: {quote(delim.join(row))}")
        limit.add(lineno)
        if dia_col is not None and dia_col < len(row):
            dialogues.setdefault(row[dia_col].strip(), lineno)
        try:
            start, end = parse_time(row[cols["start"]]), parse_time(row[cols["end"]])
        except ValueError as e:
            raise SegmentError(f"{path}:{lineno}: {e}") from None
        speaker = row[cols["speaker"]].strip() if cols["speaker"] < len(row) else ""
        text = None
        if "text" in cols and cols["text"] < len(row):
            # without a header, an unquoted text may contain the delimiter: keep all of it
            parts = row[cols["text"]:] if not header else [row[cols["text"]]]
            text = delim.join(parts).strip() or None
        out.append(Segment(start, end, speaker or None, text, f"{path}:{lineno}"))
    if len(dialogues) > 1:
        names = ", ".join(list(dialogues)[:5]) + (", ..." if len(dialogues) > 5 else "")
        raise SegmentError(
            f"{path}: holds {len(dialogues)} dialogues (Dialogue_ID {quote(names)}); a segment "
            "list is one conversation: keep the rows of one dialogue")
    return out


_RTTM_TYPES = {"SPEAKER", "SPKR-INFO", "LEXEME", "NON-LEX", "NON-SPEECH", "FILLER", "NOSCORE",
               "NO_RT_METADATA", "SEGMENT", "A/P", "IP", "SU", "CB", "EDIT"}


def read_rttm(path: str, content: str, file_id: str | None, limit: Limit) -> list[Segment]:
    out: list[Segment] = []
    files: dict[str, int] = {}
    for lineno, raw in enumerate(content.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith(("#", ";;")):
            continue
        f = line.split()
        if f[0] not in _RTTM_TYPES:
            raise SegmentError(f"{path}:{lineno}: unknown RTTM record type {quote(f[0])}")
        if f[0] != "SPEAKER":
            continue
        if len(f) < 8:
            raise SegmentError(
                f"{path}:{lineno}: RTTM SPEAKER line needs at least 8 fields "
                f"(SPEAKER file chan start dur <NA> <NA> speaker ...), got {len(f)}")
        if file_id is not None and f[1] != file_id:
            continue
        files.setdefault(f[1], lineno)
        limit.add(lineno)
        try:
            start = parse_time(f[3])
        except ValueError as e:
            raise SegmentError(f"{path}:{lineno}: start: {e}") from None
        try:
            dur = float(f[4])
        except ValueError:
            raise SegmentError(f"{path}:{lineno}: duration {quote(f[4])} is not a number") from None
        if not math.isfinite(dur) or not math.isfinite(start + dur):
            raise SegmentError(f"{path}:{lineno}: duration {quote(f[4])} is not a finite number of "
                               "seconds")
        speaker = f[7]
        if speaker in ("<NA>", ""):
            raise SegmentError(f"{path}:{lineno}: RTTM SPEAKER line without a speaker name")
        out.append(Segment(start, start + dur, speaker, None, f"{path}:{lineno}"))
    if len(files) > 1:
        raise SegmentError(
            f"{path}: RTTM holds segments of several recordings {sorted(files)}; "
            "pass file_id= to pick one")
    return out

