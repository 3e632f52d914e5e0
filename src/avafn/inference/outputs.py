"""The files a prediction result is written to, one writer per format.

::

    from avafn.inference.outputs import save
    save(result, "out/talk", ["csv", "srt"])   # predictions.json is always written

``result`` is what :func:`avafn.inference.offline.predict` returns (``utterances``: one row
per utterance). Formats (``--output-format``, default all):

- ``json``: ``predictions.json``, everything (always written: the record a rerun reads);
- ``csv``: ``predictions.csv``, one row per utterance: times, speaker, label, confidence, one
  probability column per class, one presence column per modality, the provenance columns
  (:data:`PROVENANCE`) and the row's warnings. A cell that starts with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return gets a leading ``'`` so that a spreadsheet shows it as
  text instead of running it as a formula;
- ``jsonl``: ``predictions.jsonl``, one JSON object per utterance (the rows of the JSON);
- ``srt`` / ``vtt``: ``predictions.srt`` / ``.vtt``, emotion-tagged subtitles to overlay on
  the video in any player: one cue per utterance, ``Speaker · emotion 87%`` above its text;
- ``rttm``: ``predictions.rttm``, who spoke when (NIST RTTM, readable again by
  ``--segments``); the speaker-assignment confidence, when measured, in the confidence field;
- ``html``: ``report.html`` (:mod:`avafn.reporting.html`), rendered by the caller.

Utterances without times (a clips folder whose manifest has none) have no subtitle cue nor
RTTM line; a file with none is not written and ``skipped`` says why.

A new format is one entry in :data:`WRITERS` (its file name, whether it needs times, and the
function of the result that gives the file's text); ``--output-format``, :func:`parse_formats`,
:func:`save` and ``Predictions.save`` take it from there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avafn.errors import UserError
from avafn.io import atomic_write_bytes, atomic_write_json

#: where each row's speaker and text came from (columns of the CSV, keys of every row)
PROVENANCE = ("speaker_source", "speaker_confidence", "text_source", "source", "window")
#: first characters a spreadsheet reads as a formula
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class OutputFormatError(UserError):
    """An unknown ``--output-format``."""


def parse_formats(spec: str | Iterable[str] | None) -> list[str]:
    """``"all"`` / ``None`` -> every format; else a comma list (or a list) of the formats of
    :data:`WRITERS`. ``json`` is always included (the record a rerun reads)."""
    known = list(WRITERS)
    if spec is None:
        return known
    items = [x.strip().lower() for x in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [x for x in items if x]
    if not items or "all" in items:
        return known
    bad = [x for x in items if x not in known]
    if bad:
        raise OutputFormatError(f"--output-format: unknown format {', '.join(bad)}; expected "
                                f"all or a comma list of {', '.join(known)}")
    return [f for f in known if f in items or f == "json"]


# ----------------------------------------------------------------------------- CSV
def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run as a formula (``'`` before ``= + - @``, tab,
    carriage return); numbers and other values pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def _cell(value: Any) -> Any:
    """:func:`safe_cell`, with carriage returns inside text made spaces (the writer's line end
    is ``\\n``, so a bare ``\\r`` would not be quoted and would split the row)."""
    value = safe_cell(value)
    return value.replace("\r\n", "\n").replace("\r", " ") if isinstance(value, str) else value


def _num(x: float | None, nd: int = 3) -> str:
    return "" if x is None else f"{float(x):.{nd}f}"


def csv_text(rows: Sequence[Mapping[str, Any]], labels: Sequence[str],
             modalities: Sequence[str]) -> str:
    """``predictions.csv``: one row per utterance (see the module docstring)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dialogue_id", "turn", "start", "end", "speaker", "text", "label", "confidence"]
               + [f"p_{lab}" for lab in labels] + [f"present_{m}" for m in modalities]
               + list(PROVENANCE) + ["warnings"])
    for r in rows:
        w.writerow([_cell(x) for x in (
            [r["dialogue_id"], r["turn"], _num(r["start"]), _num(r["end"]), r["speaker"],
             r["text"] or "", r["label"], f"{r['confidence']:.6f}"]
            + [f"{r['probabilities'][lab]:.6f}" for lab in labels]
            + [int(r["modalities"][m]) for m in modalities]
            + [r.get("speaker_source") or "", _num(r.get("speaker_confidence")),
               r.get("text_source") or "", r.get("source") or "", r.get("window", 0),
               "; ".join(r.get("warnings") or ())])])
    return buf.getvalue()


def jsonl_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``predictions.jsonl``: one JSON object per utterance."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ----------------------------------------------------------------------------- subtitles
def _timed(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("start") is not None and r.get("end") is not None]


def _stamp(t: float, sep: str) -> str:
    ms = max(0, round(float(t) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _one_line(s: str) -> str:
    """Text on one subtitle line: no line breaks, no ``-->`` (it would end the cue's timing)."""
    return " ".join(str(s).split()).replace("-->", "->")


def cue_head(r: Mapping[str, Any]) -> str:
    """``Speaker · emotion 87%`` (``speaker?`` when the speaker was guessed from the audio)."""
    guess = "?" if r.get("speaker_source") == "diarization" else ""
    return f"{_one_line(r['speaker'])}{guess} · {r['label']} {100 * float(r['confidence']):.0f}%"


def srt_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Emotion-tagged SubRip subtitles (markup characters kept out: players read ``<i>``)."""
    out = []
    for k, r in enumerate(_timed(rows), 1):
        lines = [cue_head(r)] + ([_one_line(r["text"])] if r.get("text") else [])
        body = "\n".join(x.replace("<", "‹").replace(">", "›") for x in lines)
        out.append(f"{k}\n{_stamp(r['start'], ',')} --> {_stamp(r['end'], ',')}\n{body}\n")
    return "\n".join(out)


def _vtt_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Emotion-tagged WebVTT subtitles; each cue has the id ``u<turn>`` of its utterance."""
    out = ["WEBVTT", ""]
    for r in _timed(rows):
        lines = [cue_head(r)] + ([_one_line(r["text"])] if r.get("text") else [])
        dia = re.sub(r"\s+", "_", str(r.get("dialogue_id", "")))
        out += [f"{dia}-u{r['turn'] + 1}",
                f"{_stamp(r['start'], '.')} --> {_stamp(r['end'], '.')}",
                *(_vtt_escape(x) for x in lines), ""]
    return "\n".join(out)


def rttm_text(rows: Sequence[Mapping[str, Any]], file_id: str) -> str:
    """NIST RTTM ``SPEAKER`` lines (names and file id without whitespace)."""
    fid = re.sub(r"\s+", "_", file_id) or "conversation"
    out = []
    for r in _timed(rows):
        name = re.sub(r"\s+", "_", str(r["speaker"])) or "unknown"
        conf = r.get("speaker_confidence")
        out.append(f"SPEAKER {fid} 1 {float(r['start']):.3f} "
                   f"{max(float(r['end']) - float(r['start']), 0.0):.3f} <NA> <NA> {name} "
                   f"{'<NA>' if conf is None else f'{float(conf):.3f}'} <NA>\n")
    return "".join(out)


# ----------------------------------------------------------------------------- the formats
@dataclass(frozen=True)
class Writer:
    """One output format: its file, whether it needs utterance times, and its text."""

    file: str
    #: the result (``predictions.json``'s content) -> the file's text; None for the two that
    #: :func:`save` writes itself (``json``: the result; ``html``: the page it is given)
    text: Callable[[Mapping[str, Any]], str] | None = None
    needs_times: bool = False


def _file_id(result: Mapping[str, Any]) -> str:
    inp = result.get("input") or {}
    return Path(inp.get("video") or inp.get("segments") or inp.get("manifest")
                or "conversation").stem


#: every format, in the order they are written
WRITERS: dict[str, Writer] = {
    "json": Writer("predictions.json"),
    "csv": Writer("predictions.csv", lambda r: csv_text(r["utterances"], r["labels"],
                                                         r["modalities"])),
    "jsonl": Writer("predictions.jsonl", lambda r: jsonl_text(r["utterances"])),
    "srt": Writer("predictions.srt", lambda r: srt_text(r["utterances"]), needs_times=True),
    "vtt": Writer("predictions.vtt", lambda r: vtt_text(r["utterances"]), needs_times=True),
    "rttm": Writer("predictions.rttm", lambda r: rttm_text(r["utterances"], _file_id(r)),
                   needs_times=True),
    "html": Writer("report.html"),
}
FORMATS = tuple(WRITERS)
#: file name of each format
FILES = {f: w.file for f, w in WRITERS.items()}


# ----------------------------------------------------------------------------- save
def save(result: Mapping[str, Any], out_dir: str | os.PathLike, formats: Iterable[str],
         html: str | None = None) -> dict:
    """Write ``result`` into ``out_dir`` in ``formats`` (:func:`parse_formats`); ``html``: the
    rendered report page (written when ``html`` is among the formats). Returns
    ``{"files": {format: file name}, "skipped": {format: why}}``."""
    out = Path(out_dir)
    fmts = parse_formats(list(formats))
    timed = _timed(list(result["utterances"]))
    written: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for f in fmts:
        w = WRITERS[f]
        if w.needs_times and not timed:
            skipped[f] = "no utterance has times"
        elif f == "html" and html is None:
            skipped[f] = "no report rendered"
        elif w.text is not None or f == "html":
            text = html if w.text is None else w.text(result)
            atomic_write_bytes(out / w.file, text.encode())
            written[f] = w.file
    written = {"json": FILES["json"], **written}
    meta = {"files": written, "skipped": skipped}
    atomic_write_json(out / FILES["json"], {**result, "outputs": meta})
    return meta


__all__ = ["FILES", "FORMATS", "PROVENANCE", "WRITERS", "OutputFormatError", "Writer",
           "csv_text", "jsonl_text", "parse_formats", "rttm_text", "safe_cell", "save",
           "srt_text", "vtt_text"]
