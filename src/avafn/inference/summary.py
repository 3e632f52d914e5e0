"""What ``predict`` found, in a few console lines: utterances, speakers (and where they came
from: tags, diarization, unknown), emotion counts, the modalities used and missing (with the
reasons), and every warning grouped by kind.

:func:`summarize` reads a ``predictions.json`` result (``utterances``, ``labels``,
``modalities``, and the optional ``ignored_modalities`` / ``warnings`` entries) and returns a
plain dict (also stored in the result); :func:`summary_lines` writes it for people: each
warning kind with its count and its first :data:`CONSOLE_PLACES` places (the files hold every
place, and every row names the warnings that concern it: :func:`row_warnings`). Names and
texts reach the terminal through :func:`printable` (no control characters).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: places of each warning kind printed on the console (the files hold all)
CONSOLE_PLACES = 3
#: the "file:line" a warning's place starts with
_PLACE = re.compile(r"^(.*?:\d+)(?:\s|$)")


def printable(s: object) -> str:
    """``s`` for a terminal: control and format characters (escape sequences, bidi overrides,
    line breaks) replaced by a space, so a speaker name cannot rewrite the screen."""
    return "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(s))


def warning_places(warnings: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{"file:line": [warning kind, ...]}`` from a result's grouped warnings."""
    out: dict[str, list[str]] = {}
    for w in warnings:
        for where in w.get("where", []):
            m = _PLACE.match(str(where))
            if m and w["warning"] not in out.setdefault(m.group(1), []):
                out[m.group(1)].append(str(w["warning"]))
    return out


def row_warnings(row: Mapping[str, Any], places: Mapping[str, Sequence[str]]
                 | Sequence[Mapping[str, Any]]) -> list[str]:
    """What a reader of one prediction row must know: a speaker guessed from the audio (with
    the assignment's confidence) or unknown, a text from speech recognition, a missing
    modality and why, and the input warnings at its source line. ``places``:
    :func:`warning_places` (or the grouped warnings themselves)."""
    if not isinstance(places, Mapping):
        places = warning_places(places)
    out = []
    src = row.get("speaker_source")
    if src == "diarization":
        conf = row.get("speaker_confidence")
        out.append("speaker guessed from the audio (diarization"
                   + (f", confidence {float(conf):.2f}" if conf is not None else "") + ")")
    elif src == "unknown":
        out.append("speaker unknown")
    if row.get("text_source") == "asr":
        out.append("text from speech recognition")
    reasons = row.get("missing_reason") or {}
    for m, present in (row.get("modalities") or {}).items():
        if not present:
            out.append(f"{m} missing" + (f": {reasons[m]}" if reasons.get(m) else ""))
    out += places.get(str(row.get("source") or ""), [])
    return out


def summarize(result: Mapping[str, Any]) -> dict:
    """Counts behind the console summary of one prediction result."""
    utts = list(result.get("utterances", []))
    labels = list(result.get("labels", []))
    speakers = Counter(str(u["speaker"]) for u in utts)
    emotions = Counter(str(u["label"]) for u in utts)
    modalities: dict[str, dict] = {}
    for m in result.get("modalities", []):
        reasons = Counter(u.get("missing_reason", {}).get(m, "not extracted")
                          for u in utts if not u.get("modalities", {}).get(m, False))
        modalities[m] = {"present": len(utts) - sum(reasons.values()),
                         "missing": dict(reasons.most_common())}
    order = {lab: k for k, lab in enumerate(labels)}
    origin: dict[str, dict[str, int]] = {}
    for u in utts:
        spk = origin.setdefault(str(u["speaker"]), {})
        key = str(u.get("speaker_source") or "tag")
        spk[key] = spk.get(key, 0) + 1
    return {
        "utterances": len(utts),
        "dialogues": len({u.get("dialogue_id") for u in utts}),
        "speakers": dict(speakers),  # in order of first appearance
        # speaker -> {"tag" | "diarization" | "unknown": utterances}
        "speaker_sources": origin,
        "text_sources": dict(Counter(str(u.get("text_source") or "none") for u in utts)),
        "emotions": {k: emotions[k] for k in sorted(emotions, key=lambda x: order.get(x, 1e9))},
        "modalities": modalities,
        "ignored_modalities": dict(result.get("ignored_modalities", {})),
        "warnings": list(result.get("warnings", [])),
    }


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items()) or "none"


def _speaker_line(summary: Mapping[str, Any]) -> str | None:
    """Which speakers came from the audio or are unknown (None when all are tagged)."""
    guessed, unknown, n_unknown = [], [], 0
    for spk, src in (summary.get("speaker_sources") or {}).items():
        if src.get("diarization"):
            guessed.append(spk)
        if src.get("unknown"):
            unknown.append(spk)
            n_unknown += src["unknown"]
    if not guessed and not unknown:
        return None
    parts = []
    if guessed:
        parts.append(f"speakers guessed from the audio (diarization, check them): "
                     f"{', '.join(guessed)}")
    if unknown:
        parts.append(f"speaker not known for {n_unknown} utterance(s) (shown as "
                     f"{', '.join(unknown)})")
    return "; ".join(parts)


def warning_lines(warnings: Sequence[Mapping[str, Any]], places: int = CONSOLE_PLACES
                  ) -> list[str]:
    """One line per warning kind: its count and its first ``places`` places."""
    out = []
    for w in warnings:
        where = list(w.get("where", []))
        shown = ", ".join(map(str, where[:places]))
        rest = int(w["count"]) - min(places, len(where))
        more = f", ... {rest} more" if rest > 0 and shown else ""
        out.append(f"{w['warning']}: {w['count']}" + (f" ({shown}{more})" if shown else ""))
    return out


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The summary as console lines (no trailing newlines, no control characters)."""
    n = summary["utterances"]
    dias = summary.get("dialogues", 1)
    spk = summary["speakers"]
    lines = [f"{n} utterance(s)" + (f" in {dias} dialogues" if dias > 1 else "")
             + f", {len(spk)} speaker(s): {_counts(spk)}"]
    who = _speaker_line(summary)
    if who:
        lines.append(who)
    text = summary.get("text_sources") or {}
    if text.get("asr"):
        lines.append(f"text from speech recognition: {text['asr']} utterance(s)")
    lines.append(f"emotions: {_counts(summary['emotions'])}")
    used = []
    for m, st in summary["modalities"].items():
        part = f"{m} {st['present']}/{n}"
        if st["missing"]:
            part += " (missing: " + ", ".join(f"{r} x{k}" for r, k in st["missing"].items()) + ")"
        used.append(part)
    lines.append("modalities: " + ("; ".join(used) or "none"))
    for m, why in summary.get("ignored_modalities", {}).items():
        lines.append(f"not used: {m} ({why})")
    warns = summary.get("warnings", [])
    if warns:
        lines.append(f"warnings ({sum(w['count'] for w in warns)} in {len(warns)} kind(s); "
                     "every place in predictions.json / .csv):")
        lines += [f"  {line}" for line in warning_lines(warns)]
    else:
        lines.append("warnings: none")
    return [printable(line) for line in lines]
