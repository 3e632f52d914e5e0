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
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import itertools
import json
import math
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from avafn.errors import UserError
from avafn.notices import Notices

FORMATS = ("csv", "srt", "vtt", "ass", "json", "txt", "rttm")
_EXT = {".csv": "csv", ".tsv": "csv", ".srt": "srt", ".vtt": "vtt", ".webvtt": "vtt",
        ".ass": "ass", ".ssa": "ass", ".json": "json", ".txt": "txt", ".rttm": "rttm"}
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
#: characters of the input quoted in a message at most
QUOTE_CHARS = 80
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


def quote(text: object, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of a piece of the input for a message, cut to about ``limit`` characters."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


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


# --------------------------------------------------------------------------- time parsing
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)$")


def parse_time(s: str) -> float:
    """Seconds from ``"12.5"``, ``"12,5"``, ``"00:00:12.500"``, ``"00:12,5"``; raises ``ValueError``
    (also for ``nan``, ``inf`` and anything else that is not a finite number)."""
    s = s.strip()
    if not s:
        raise ValueError("empty time")
    m = _CLOCK.match(s)
    if m:
        h, mnt, sec = m.group(1), m.group(2), m.group(3).replace(",", ".")
        if int(mnt) >= 60 or float(sec) >= 60:
            raise ValueError(f"invalid clock time {quote(s)}")
        return int(h or 0) * 3600 + int(mnt) * 60 + float(sec)
    if s.count(",") == 1 and "." not in s:  # a decimal comma: "12,5" (European spreadsheets)
        s = s.replace(",", ".")
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"not a time: {quote(s)} (expected seconds or HH:MM:SS.mmm)") from None
    if not math.isfinite(v):
        raise ValueError(f"not a finite time: {quote(s)}")
    return v


#: beyond this many seconds (about 31,700 years) a time is written in plain seconds
_CLOCK_LIMIT = 1e12


def format_time(t: float) -> str:
    """``HH:MM:SS.mmm`` (for reports and messages); never raises: a non-finite or absurdly
    large value is written as it is (``nan s``, ``1e+300 s``)."""
    try:
        t = float(t)
    except (TypeError, ValueError):
        return str(t)
    if not math.isfinite(t) or abs(t) >= _CLOCK_LIMIT:
        return f"{t:g} s"
    sign = "-" if t < 0 else ""
    ms = round(abs(t) * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{sign}{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


# --------------------------------------------------------------------------- speaker names
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


# --------------------------------------------------------------------------- cue text
_SOUND_TEXT = """
music musical song singing sings sung humming hums melody tune instrumental playing plays
laugh laughs laughing laughter chuckle chuckles chuckling giggle giggles giggling snickers
applause clapping claps cheer cheers cheering sigh sighs sighing gasp gasps gasping cough
coughs coughing sneeze sneezes sniff sniffs sniffing sniffles sob sobs sobbing cry cries
crying weeping scream screams screaming shout shouts shouting yell yells yelling whisper
whispers whispering whispered groan groans groaning moan moans grunt grunts grunting murmur
murmurs murmuring mumble mumbles mumbling inaudible indistinct unintelligible crosstalk
chatter chattering noise noises silence static beep beeps beeping ring rings ringing ringtone
phone door doorbell knock knocks knocking footsteps thud thunder explosion gunshot gunshots
siren sirens wind rain engine horn honking bell bells bark barks barking howl howls meow
background exhales inhales breathing breathes panting pants snoring snores clears throat
kiss kisses kissing blank audio sound sounds sfx tv radio whistle whistles whistling
upbeat dramatic suspenseful tense ominous soft loud continues continuing fades ends stops
speaking speaks foreign language silent pause scoffs scoffing groaning slams slamming
"""
_SOUND_WORDS = frozenset(_SOUND_TEXT.split())
_SOUND_SPAN = re.compile(r"[♪♫][^♪♫]*(?:[♪♫]|$)")
# every pattern is linear in the cue: a bracket's inside excludes its own opening character
# (a run of "(((" is scanned once, not once per "("), and no quantifier nests another
_BRACKET = re.compile(r"\[[^\[\]\n]*\]")
_PAREN = re.compile(r"\([^()\n]*\)")
_ASS = re.compile(r"\{\\[^{}]*\}")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<\d{1,2}:\d{2}(?::\d{2})?[.,]\d{1,3}>")
_VOICE = re.compile(r"^<v(?:\.[^\s>.]+)*(?:\s([^>]*))?>", re.IGNORECASE)
_VOICE_END = re.compile(r"</v>", re.IGNORECASE)
_DASH = re.compile(r"^[-\u2010-\u2015]\s*")
_CHEVRONS = re.compile(r"^>{2,}\s*")
_NAME_COLON = re.compile(
    r"^([^\W\d_][\w .'&#\-]{0,39}?|[\w\-]{1,40}?)[ \t]{0,3}(?:\([^()\n]{1,30}\)[ \t]{0,3})?:"
    r"(?:\s+(.*)|\s*)$",
    re.DOTALL)
_LEAD_BRACKET = re.compile(r"^[\[(]([^\])\n]{1,40})[\])]\s*(:?)\s*(.*)$", re.DOTALL)


def _is_sound(desc: str) -> bool:
    """Is the inside of ``[...]`` / ``(...)`` a sound description rather than a name?"""
    words = re.findall(r"[^\W\d_]+", desc.lower())
    if not words:
        return True
    if any(w in _SOUND_WORDS for w in words):
        return True
    first = desc.strip()[:1]
    return first.islower()


_PARTICLES = frozenset(("de", "van", "von", "der", "den", "da", "di", "du", "la", "le", "of",
                        "the"))


def _name_like(s: str, colon: bool) -> bool:
    s = s.strip()
    if not s or len(s) > 40 or len(s.split()) > (3 if colon else 4):
        return False
    words = s.split()
    if colon:  # several words: each capitalised (or a particle); "It's simple:" is no name
        return len(words) == 1 or (all(not w[0].islower() or w in _PARTICLES for w in words)
                                   and not words[0][0].islower())
    return s[0].isupper() and not _is_sound(s)


@dataclass
class _Turn:
    speaker: str | None
    text: str


def _strip_markup(line: str) -> tuple[str, bool]:
    out = _TAG.sub("", _ASS.sub("", line))
    if "&" in out:
        out = html.unescape(out)
    return out, out != line


def _tag(text: str) -> tuple[str | None, str]:
    """``(speaker or None, rest)`` from a turn's text (dash and ``>>`` already removed)."""
    m = _LEAD_BRACKET.match(text)
    if m and (m.group(2) or m.group(3).strip()) and _name_like(m.group(1), bool(m.group(2))):
        return m.group(1).strip(), m.group(3).strip()
    m = _NAME_COLON.match(text)
    if m and _name_like(m.group(1), True):
        return m.group(1).strip(), (m.group(2) or "").strip()
    return None, text


#: ``>> JOHN SMITH Hello.``: a broadcast caption's speaker in capitals, without a colon
_CAPS_NAME = re.compile(r"^((?:[A-Z][A-Z.'\-]+)(?: [A-Z][A-Z.'\-]+){0,2}) (?=\S)(.*)$", re.DOTALL)
#: capitalised words that start a sentence, not a name
_NOT_NAMES = frozenset(("OK", "OKAY", "NO", "YES", "HEY", "HI", "OH", "WOW", "WELL", "SO",
                        "AND", "BUT", "THE", "WE", "YOU", "IT", "IS", "AS", "AT", "IN", "ON"))


def _caps_tag(text: str) -> tuple[str | None, str]:
    """``(speaker, rest)`` from a turn after ``>>`` whose speaker is written in capitals
    without a colon (``>> JOHN Hello there.``); the rest must be ordinary sentence case, so
    an all-capitals caption (``>> WE ARE LIVE``) or ``>> OK let's go`` is no tag."""
    m = _CAPS_NAME.match(text)
    if not m:
        return None, text
    name, rest = m.group(1), m.group(2).strip()
    words = name.split()
    if words[0] in _NOT_NAMES or not (rest[:1].isupper() or rest[:1] in "\"'¿¡"):
        return None, text
    if not all(re.search(r"[AEIOUY]", w) or w.endswith(".") for w in words):  # NBC: no name
        return None, text
    if not any(c.islower() for c in rest):
        return None, text
    return name, rest


def _drop_sounds(text: str) -> tuple[str, int]:
    n = 0

    def cut(m: re.Match) -> str:
        nonlocal n
        n += 1
        return " "

    text = _SOUND_SPAN.sub(cut, text)
    text = _BRACKET.sub(cut, text)
    text = _PAREN.sub(lambda m: cut(m) if _is_sound(m.group(0)[1:-1]) else m.group(0), text)
    return " ".join(text.split()), n


def parse_cue(lines: Sequence[str], where: str = "", notices: Notices | None = None
              ) -> list[_Turn]:
    """The turns of one subtitle cue (usually one): speaker (or ``None``) and clean text.
    Markup and sound descriptions are removed and counted in ``notices``."""
    # (voice, line, starts a turn): a WebVTT voice span or a dialogue dash starts a turn
    entries: list[tuple[str | None, str, bool]] = []
    markup = False
    voice: str | None = None
    for raw in lines:
        line = raw.strip()
        m = _VOICE.match(line)
        if m:
            line = line[m.end():]
            if m.group(1) and m.group(1).strip():
                voice = m.group(1).strip()
        line, changed = _strip_markup(_VOICE_END.sub("", line))  # </v> closes a speaker tag
        markup |= changed
        line = line.strip()
        if line:
            entries.append((voice, line, voice is not None or bool(_DASH.match(line))))
            voice = None
    if markup and notices is not None:
        notices.warn(W_MARKUP, where)
    parts: list[tuple[str | None, list[str]]] = []
    for i, (v, line, new) in enumerate(entries):
        if i == 0 or new:
            parts.append((v, [line]))
        else:
            parts[-1][1].append(line)
    turns: list[_Turn] = []
    sounds = 0
    for v, part in parts:
        text = _DASH.sub("", " ".join(part), count=1)
        chev = _CHEVRONS.match(text)
        if chev:
            text = text[chev.end():]
        speaker, text = (v, text) if v is not None else _tag(text)
        if speaker is None and chev:
            speaker, text = _caps_tag(text)
        text, n = _drop_sounds(text)
        sounds += n
        if speaker is None and text:  # a tag may follow a dropped sound: "[laughs] Bob: hi"
            speaker, text = _tag(text)
        if text or (speaker is not None and n == 0):
            turns.append(_Turn(speaker, text))
    if sounds and notices is not None:
        notices.warn(W_SOUND, where, sounds)
    return turns


def split_speaker(cue_text: str) -> tuple[str, str] | None:
    """``(speaker, text)`` from a subtitle cue with a speaker tag, ``None`` if it has none."""
    turns = parse_cue(cue_text.splitlines())
    if not turns or turns[0].speaker is None:
        return None
    return turns[0].speaker, turns[0].text


# --------------------------------------------------------------------------- readers
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
    if _TXT_LINE.match(first):
        return "txt"
    raise SegmentError(
        f"{path}:1: unknown segment format (extension {ext or 'none'!r}); expected one of "
        ".csv (start,end,speaker[,text]; ',' ';' or tab), .srt, .vtt (WebVTT), .ass / .ssa, "
        ".json (whisper / whisperX), .txt ('Name: line' per turn) or .rttm")


class _Limit:
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


def _read_csv(path: str, content: str, limit: _Limit) -> list[Segment]:
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


def _read_json(path: str, content: str, limit: _Limit, notices: Notices) -> list[Segment]:
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
            turns = [_Turn(speaker, " ".join(t.text for t in turns))] if turns else []
        if not turns or not turns[0].text:
            notices.warn(W_EMPTY, where)
            continue
        out.append(Segment(start, end, turns[0].speaker, turns[0].text, where))
    return out


def _read_ass(path: str, content: str, limit: _Limit, notices: Notices) -> list[Segment]:
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
            turns = [_Turn(name, " ".join(t.text for t in turns))]
        if not turns:
            notices.warn(W_SOUND_ONLY if row["text"].strip() else W_EMPTY, where)
            continue
        limit.add(lineno, len(turns))
        if len(turns) > 1:
            notices.warn(W_SPLIT, where)
        out += _share_time(start, end, turns, where)
    return out


#: a transcript line: optional time ``[00:01:02]`` / ``00:01:02.5``, then ``Name: text``
_TXT_LINE = re.compile(r"^(?:\[?(\d{1,2}(?::\d{1,2}){1,2}(?:[.,]\d+)?)\]?[ \t]+)?"
                       r"([^\W\d_][\w .'&\-]{0,39}?)[ \t]{0,3}:[ \t]*(.*)$")
#: seconds per turn of a transcript without times (its turns are numbered 0, 1, 2, ...)
TXT_TURN_SECONDS = 1.0


def _read_txt(path: str, content: str, limit: _Limit, notices: Notices,
              duration: float | None) -> list[Segment]:
    """A plain transcript: ``Name: line`` starts a turn (other lines continue it), with an
    optional leading time ``[HH:MM:SS]`` on each turn. Without times, turn k spans
    ``[k, k + 1)`` seconds: such a transcript serves a text-only run without media."""
    turns: list[list] = []  # [lineno, time or None, speaker or None, [text lines]]
    for lineno, raw in enumerate(content.splitlines(), 1):
        line = raw.strip().lstrip("\ufeff")
        if not line:
            continue
        m = _TXT_LINE.match(line)
        if m and _name_like(m.group(2), True):
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


_ARROW = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)(?:\s+.*)?$")


def _read_subtitles(path: str, content: str, fmt: str, limit: _Limit,
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


def _share_time(start: float, end: float, turns: list[_Turn], where: str) -> list[Segment]:
    """One segment per turn of a cue, its time shared in proportion to the text lengths."""
    if len(turns) == 1 or end <= start:
        t = turns[0] if len(turns) == 1 else _Turn(turns[0].speaker,
                                                   " ".join(x.text for x in turns))
        return [Segment(start, end, t.speaker, t.text or None, where)]
    weights = [max(len(t.text), 1) for t in turns]
    total = sum(weights)
    bounds = [start + (end - start) * c / total for c in itertools.accumulate(weights)]
    bounds = [start, *bounds[:-1], end]
    return [Segment(a, b, t.speaker, t.text or None, where)
            for a, b, t in zip(bounds, bounds[1:], turns)]


_RTTM_TYPES = {"SPEAKER", "SPKR-INFO", "LEXEME", "NON-LEX", "NON-SPEECH", "FILLER", "NOSCORE",
               "NO_RT_METADATA", "SEGMENT", "A/P", "IP", "SU", "CB", "EDIT"}


def _read_rttm(path: str, content: str, file_id: str | None, limit: _Limit) -> list[Segment]:
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
    limit = _Limit(path, max_segments)
    if fmt == "csv":
        segs = _read_csv(path, content, limit)
    elif fmt == "json":
        segs = _read_json(path, content, limit, notices)
    elif fmt == "ass":
        segs = _read_ass(path, content, limit, notices)
    elif fmt == "txt":
        segs = _read_txt(path, content, limit, notices, duration)
    elif fmt == "rttm":
        segs = _read_rttm(path, content, file_id, limit)
    else:
        segs = _read_subtitles(path, content, fmt, limit, notices)
    if not segs:
        raise SegmentError(f"{path}: no segments")
    return tidy_segments(segs, duration, overlaps=overlaps, notices=notices, where=path)


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


# --------------------------------------------------------------------------- untagged cues
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
