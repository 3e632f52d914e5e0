"""Many videos at once: a folder of videos and audio files, each with an optional sidecar
subtitle file of the same stem, into one output folder per media file plus an index page.

::

    from avafn.inference.batch import predict_folder
    predict_folder("runs/av", "talks/", "out/talks")

``talks/a.mp4`` (or ``a.wav``, ``a.mp3``, ...) with ``talks/a.srt`` (or ``.vtt``, ``.ass``,
``.ssa``, ``.json``, ``.csv``, ``.txt``, ``.rttm``, first found in that order; a
language-suffixed ``a.en.srt`` too, English first, then the others by name) gives
``out/talks/a/`` (``predictions.json`` / ``.csv``, ``report.html``); a video
without a sidecar is predicted from the media alone (when predict can find the utterances
itself) or listed as failed with the reason. ``out/talks/index.html`` links every report with
its counts; ``index.json`` holds the same data.

Resumable: a video whose outputs are complete (all files there, made from the same inputs,
newer than them) is skipped; a failure is recorded and the next video goes on.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from avafn.errors import UserError
from avafn.inference.inputs import MEDIA_EXTS, PredictError
from avafn.inference.outputs import parse_formats
from avafn.inference.predictor import Predictor
from avafn.inference.summary import printable, summarize
from avafn.io import atomic_write_bytes, atomic_write_json
from avafn.logs import indented
from avafn.reporting.html import asset
from avafn.run import Run

log = logging.getLogger(__name__)

SIDECAR_EXTS = (".srt", ".vtt", ".ass", ".ssa", ".json", ".csv", ".txt", ".rttm")
#: a language suffix of a sidecar (``ep05.en.srt``, ``ep05.pt-BR.srt``); English first
_LANG_FIRST = ("en", "eng", "en-us", "en-gb")
_LANG_TAG = re.compile(r"[a-z]{2,3}(?:[-_][a-z0-9]{2,4})?")
OUTPUTS = ("predictions.json", "predictions.csv")


@dataclass(frozen=True)
class FolderItem:
    """One video of the folder, its sidecar segment list (if any) and its output folder."""

    video: Path
    segments: Path | None
    out: Path


def _sidecar(media: Path, files: list[Path]) -> Path | None:
    """The subtitle file of ``media``: same stem (``a.srt``) first, else a language-suffixed
    one (``a.en.srt`` before ``a.fr.srt``), each in :data:`SIDECAR_EXTS` order."""
    rank = {e: k for k, e in enumerate(SIDECAR_EXTS)}
    plain, tagged = [], []
    for f in files:
        ext = f.suffix.lower()
        if ext not in rank or f == media:
            continue
        if f.stem == media.stem:
            plain.append((rank[ext], f.name, f))
        elif f.stem.startswith(media.stem + "."):
            lang = f.stem[len(media.stem) + 1:].lower()
            if _LANG_TAG.fullmatch(lang):  # en, pt-br, eng; not talk.info.json
                tagged.append((lang not in _LANG_FIRST, rank[ext], lang, f))
    if plain:
        return min(plain)[2]
    return min(tagged)[3] if tagged else None


def find_videos(folder: str | os.PathLike, out_dir: str | os.PathLike,
                skipped: list[str] | None = None) -> list[FolderItem]:
    """The videos and audio files of ``folder`` (sorted by name) with their sidecars and
    output folders; ``skipped`` receives one line per other file left aside."""
    root = Path(folder)
    if not root.is_dir():
        raise PredictError(f"{folder}: videos folder not found")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    videos = [p for p in files if p.suffix.lower() in MEDIA_EXTS]
    if not videos:
        raise PredictError(f"{folder}: no video or audio files in it (looked for "
                           f"{', '.join(MEDIA_EXTS)})")
    stems = Counter(p.stem for p in videos)
    items = []
    used: set[Path] = set()
    for v in videos:
        side = _sidecar(v, files)
        if side is not None:
            used.add(side)
        name = v.stem if stems[v.stem] == 1 else v.name.replace(".", "_")
        items.append(FolderItem(v, side, Path(out_dir) / name))
    if skipped is not None:
        for f in files:
            if f in used or f.suffix.lower() in MEDIA_EXTS:
                continue
            why = ("a subtitle file with no media file of its stem" if f.suffix.lower() in
                   SIDECAR_EXTS else "not a video, audio or subtitle file")
            skipped.append(f"{f.name}: skipped ({why}; media: {', '.join(MEDIA_EXTS)})")
    return items


def outputs_complete(item: FolderItem, html_report: bool = True) -> dict | None:
    """The stored result when ``item``'s outputs are complete and made from its current inputs,
    else ``None``."""
    if not (item.out / OUTPUTS[0]).is_file():
        return None
    try:
        res = json.loads((item.out / "predictions.json").read_text())
    except (OSError, ValueError):
        return None
    files = (res.get("outputs") or {}).get("files") if isinstance(res, dict) else None
    need = tuple(files.values()) if isinstance(files, dict) else OUTPUTS
    need += (("report.html",) if html_report and "report.html" not in need else ())
    if not all((item.out / n).is_file() for n in need):
        return None
    inp = res.get("input", {}) if isinstance(res, dict) else {}
    if not isinstance(inp, dict) or inp.get("video") != str(item.video.resolve()):
        return None
    seg = inp.get("segments")
    if item.segments is not None:
        if seg != str(item.segments.resolve()):
            return None
    elif seg is not None and Path(seg).parent != item.out.resolve():
        return None  # made from a sidecar since removed (segments found here are fine)
    made = min((item.out / n).stat().st_mtime for n in need)
    inputs = [item.video] + ([item.segments] if item.segments else [])
    if any(p.stat().st_mtime > made for p in inputs):
        return None
    return res


def _entry(item: FolderItem, status: str, res: Mapping[str, Any] | None = None,
           error: str = "") -> dict:
    e: dict[str, Any] = {"video": item.video.name, "segments": item.segments.name
                         if item.segments else None, "out": item.out.name, "status": status}
    if res is not None:
        s = res.get("summary") or summarize(res)
        e.update({"utterances": s["utterances"], "speakers": len(s["speakers"]),
                  "emotions": s["emotions"],
                  "warnings": sum(w["count"] for w in s.get("warnings", []))})
    if error:
        e["error"] = error
    return e


#: the keywords of :func:`predict_folder` that build its one :class:`Predictor`
_PREDICTOR_KW = ("device", "extractor_models", "diarization", "asr", "asr_model", "asr_language")
#: those that only shape the written files
_SAVE_KW = ("formats", "index_href")


def _say(line: str) -> None:
    log.info(printable(line))  # file names reach a terminal without control characters


def predict_folder(run_dir: str | os.PathLike, folder: str | os.PathLike,
                   out_dir: str | os.PathLike, *, html_report: bool = True,
                   **predict_kw: Any) -> dict:
    """Predict every video of ``folder`` into ``out_dir/<stem>/`` (module docstring).

    One :class:`avafn.inference.predictor.Predictor` (models and extractors built once) for
    all the videos; ``predict_kw`` are the keywords of :func:`avafn.inference.offline.predict`
    (those of :meth:`Predictor.from_run`, of a call, and ``formats`` / ``index_href``).
    One progress line per video is logged (``avafn.inference.batch``, INFO). Returns what
    ``index.json`` holds: ``videos`` (one entry each: status ``done`` / ``skipped`` /
    ``failed``, counts or the error) and the totals.
    """
    out = Path(out_dir)
    skipped: list[str] = []
    items = find_videos(folder, out, skipped)
    for line in skipped:
        _say(line)
    build = {k: predict_kw.pop(k) for k in _PREDICTOR_KW if k in predict_kw}
    keep = {k: predict_kw.pop(k) for k in _SAVE_KW if k in predict_kw}
    formats = parse_formats(keep.get("formats"))
    run = Run.open(run_dir)  # a bad run folder stops here, before any video
    predictor: Predictor | None = None
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    for k, item in enumerate(items, 1):
        head = f"[{k}/{len(items)}] {item.video.name}"
        done = outputs_complete(item, html_report and "html" in formats)
        if done is not None:
            entries.append(_entry(item, "skipped", done))
            _say(f"{head}: outputs complete, skipped")
        else:
            _say(f"{head}" + (f" + {item.segments.name}" if item.segments else
                              " (no subtitle file beside it)"))
            try:
                if predictor is None:  # built once, on the first video to predict
                    predictor = Predictor.from_run(run, **build)
                with indented():  # the video's own progress lines, below its head line
                    preds = predictor(item.video, item.segments, out_dir=item.out, **predict_kw)
                preds.save(item.out, formats, html=html_report,
                           index_href=keep.get("index_href"))
                res = preds.to_dict()
            except UserError as e:
                entries.append(_entry(item, "failed", error=str(e)))
                _say(f"{head}: failed: {e}")
            except (OSError, RuntimeError, ValueError) as e:  # one bad video stops nothing
                entries.append(_entry(item, "failed", error=f"{type(e).__name__}: {e}"))
                _say(f"{head}: failed: {type(e).__name__}: {e}")
            else:
                entries.append(_entry(item, "done", res))
                _say(f"{head}: {entries[-1]['utterances']} utterances")
        index = _index(run_dir, folder, entries, len(items))
        atomic_write_json(out / "index.json", index)
        atomic_write_bytes(out / "index.html", index_html(index).encode())
    return index


def _index(run_dir: str | os.PathLike, folder: str | os.PathLike, entries: list[dict],
           total: int) -> dict:
    st = Counter(e["status"] for e in entries)
    return {"run": str(Path(run_dir).resolve()), "folder": str(Path(folder).resolve()),
            "videos": entries, "total": total, "done": st["done"], "skipped": st["skipped"],
            "failed": st["failed"], "pending": total - len(entries)}


def index_html(index: Mapping[str, Any]) -> str:
    """A small self-contained page: one row per video (its report and CSV, status, emotions
    or error, warnings, counts); from 600 px down, each video is a card (no sideways
    scrolling)."""
    esc = html.escape
    rows = []
    for e in index["videos"]:
        href = esc(quote(e["out"]))
        link = f'<a href="{href}/report.html">{esc(e["video"])}</a>' \
            if e["status"] != "failed" else esc(e["video"])
        files = (f'<span class="files"><a href="{href}/report.html">report</a>'
                 f'<a href="{href}/predictions.csv">csv</a></span>'
                 if e["status"] != "failed" else "")
        emo = ", ".join(f"{esc(k)} {v}" for k, v in e.get("emotions", {}).items())
        detail = f'<span class="failed">{esc(e["error"])}</span>' if e.get("error") else emo
        rows.append(
            f'<tr class="{esc(e["status"])}"><td class="name">{link}</td>'
            f'<td class="nw" data-label="status">{esc(e["status"])}</td>'
            f'<td class="name" data-label="{"error" if e.get("error") else "emotions"}">'
            f'{detail}</td>'
            f'<td class="n" data-label="warnings">{e.get("warnings", "")}</td>'
            f'<td class="n" data-label="utterances">{e.get("utterances", "")}</td>'
            f'<td class="n" data-label="speakers">{e.get("speakers", "")}</td>'
            f'<td class="name" data-label="transcript">{esc(e["segments"] or "-")}</td>'
            f'<td class="nw" data-label="files">{files}</td></tr>')
    head = (f'{index["total"]} recording(s): {index["done"]} predicted, {index["skipped"]} already '
            f'complete, {index["failed"]} failed' +
            (f', {index["pending"]} pending' if index.get("pending") else ""))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>Emotions in {esc(Path(index['folder']).name)}</title><style>{asset('index.css')}</style>"
            f"</head><body><h1>Emotions in {esc(Path(index['folder']).name)}</h1>"
            f"<p>{esc(head)}. Run: <code>{esc(index['run'])}</code></p>"
            "<table><thead><tr><th>recording</th><th>status</th><th>emotions / error</th>"
            "<th>warnings</th><th>utterances</th><th>speakers</th><th>transcript</th>"
            f"<th>files</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>\n")
