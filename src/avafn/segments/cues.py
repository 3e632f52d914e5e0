"""The text of a subtitle cue: markup and sound descriptions dropped, speaker tags read,
a cue with dialogue dashes split into turns (module docstring of :mod:`avafn.segments`)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from avafn.notices import Notices
from avafn.segments.base import W_MARKUP, W_SOUND

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


def name_like(s: str, colon: bool) -> bool:
    s = s.strip()
    if not s or len(s) > 40 or len(s.split()) > (3 if colon else 4):
        return False
    words = s.split()
    if colon:  # several words: each capitalised (or a particle); "It's simple:" is no name
        return len(words) == 1 or (all(not w[0].islower() or w in _PARTICLES for w in words)
                                   and not words[0][0].islower())
    return s[0].isupper() and not _is_sound(s)


@dataclass
class Turn:
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
    if m and (m.group(2) or m.group(3).strip()) and name_like(m.group(1), bool(m.group(2))):
        return m.group(1).strip(), m.group(3).strip()
    m = _NAME_COLON.match(text)
    if m and name_like(m.group(1), True):
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
              ) -> list[Turn]:
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
    turns: list[Turn] = []
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
            turns.append(Turn(speaker, text))
    if sounds and notices is not None:
        notices.warn(W_SOUND, where, sounds)
    return turns


def split_speaker(cue_text: str) -> tuple[str, str] | None:
    """``(speaker, text)`` from a subtitle cue with a speaker tag, ``None`` if it has none."""
    turns = parse_cue(cue_text.splitlines())
    if not turns or turns[0].speaker is None:
        return None
    return turns[0].speaker, turns[0].text
