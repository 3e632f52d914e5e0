"""Conversations in: a video cut by a segment list, or a folder of clips with a manifest, as a
:class:`~avafn.data.corpus.Corpus`; and the same inputs one utterance at a time for streaming.

- a video or audio file plus a segment list (:mod:`avafn.segments`: CSV, SRT, WebVTT,
  ASS / SSA, whisper JSON, ``Name: line`` text, RTTM as they come),
  tidied against the video's duration, becomes one dialogue (split ``"predict"``) whose
  speakers are indexed in order of first appearance; cues without a speaker tag take theirs
  from a diarizer's turns (``speaker_turns``) or become one speaker ``unknown``;
- a segment list alone (a transcript) is the same dialogue without media, for a run trained
  on text only (:func:`media_needs` refuses it for a run that uses audio or video);
- a folder of per-utterance clips plus a generic manifest (:mod:`avafn.data.manifest`;
  ``media`` relative to the clips folder) gives every dialogue of it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.data.manifest import read_manifest
from avafn.errors import UserError
from avafn.extract.media import MediaError, declared_end, open_media
from avafn.notices import Notices
from avafn.segments import (
    DEFAULT_MAX_SEGMENTS,
    UNKNOWN_SPEAKER,
    Segment,
    SegmentError,
    assign_speakers,
    read_segments,
    speaker_indices,
    untagged,
)

log = logging.getLogger(__name__)

#: the split name of the utterances predict builds from a segment list
SPLIT = "predict"


class PredictError(UserError):
    """Inputs that cannot be predicted on: bad segments, unextractable modalities, ..."""


# ----------------------------------------------------------------------------- media
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
              ".ts", ".mts")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac", ".wma")
MEDIA_EXTS = VIDEO_EXTS + AUDIO_EXTS


def media_duration(path: str | os.PathLike) -> float:
    """Duration of a media file in seconds (container, else longest stream)."""
    import av

    try:
        with open_media(path) as c:
            if c.duration is not None:
                return float(c.duration / av.time_base)
            best = max((declared_end(c, s) or 0.0 for s in c.streams), default=0.0)
            if best > 0:
                return best
    except MediaError as e:
        detail = f": {e.detail}" if e.detail else ""
        raise PredictError(f"{path}: cannot open the video ({e.reason}{detail})") from None
    except OSError as e:
        raise PredictError(f"{path}: cannot open the video ({e})") from None
    raise PredictError(f"{path}: the video does not declare its duration")


# ----------------------------------------------------------------------------- conversations
#: who speaks when in a media file, for cues without a speaker tag: called with the media path
#: and the segments (their spans are the speech), returns speaker turns (objects with
#: ``start``, ``end``, ``speaker``), e.g. a diarizer's
SpeakerTurns = Callable[[str, Sequence[Segment]], Sequence[Any]]


def video_segments(video: str | os.PathLike | None, segments: str | os.PathLike, *,
                   overlaps: str = "trim", max_segments: int | None = DEFAULT_MAX_SEGMENTS,
                   notices: Notices | None = None, speaker_turns: SpeakerTurns | None = None
                   ) -> list[Segment]:
    """The segment list of ``video`` (or of no media, ``None``: a transcript), tidied by
    :func:`avafn.segments.read_segments` against the video's duration; cues without a speaker
    tag get one from ``speaker_turns`` when there is media, else :data:`UNKNOWN_SPEAKER`."""
    notices = notices if notices is not None else Notices()
    duration = None
    if video is not None:
        if not Path(video).is_file():
            raise PredictError(f"{video}: video not found")
        duration = media_duration(video)
    try:
        segs = read_segments(segments, duration=duration, overlaps=overlaps,
                             max_segments=max_segments, notices=notices)
    except SegmentError as e:
        raise PredictError(str(e)) from None
    n = untagged(segs)
    if n:
        turns = None
        if video is not None and speaker_turns is not None:
            turns = speaker_turns(str(video), segs)
        else:
            why = "no media to diarize" if video is None else "no diarizer available"
            log.info(f"note: {n} segment(s) without a speaker tag ({why}): one speaker "
                f"{UNKNOWN_SPEAKER!r}")
        segs = assign_speakers(segs, turns, notices)
    return segs


def corpus_from_segments(video: str | os.PathLike | None, segments: Sequence[Segment],
                         labels: Sequence[str], dialogue_id: str | None = None) -> Corpus:
    """One dialogue (split ``"predict"``) whose utterances cut ``video`` at the segments
    (``video=None``: a transcript, utterances without media)."""
    seg_file = segments[0].source.rsplit(":", 1)[0]
    media = str(Path(video).resolve()) if video is not None else None
    dia = dialogue_id or Path(media or seg_file).stem
    idx = speaker_indices(list(segments))
    utts = [Utterance(SPLIT, dia, t, s.speaker, idx[s.speaker], None, s.text, media, s.start,
                      s.end, s.source, speaker_source=s.speaker_origin,
                      speaker_confidence=s.speaker_confidence, text_source=s.text_origin,
                      window=s.window) for t, s in enumerate(segments)]
    return Corpus(f"predict:{dia}", list(labels), {SPLIT: [Dialogue(SPLIT, dia, utts)]},
                  source={"video": media, "segments": seg_file})


def media_needs(modalities: Sequence[str], video: str | os.PathLike | None
                ) -> dict[str, str]:
    """Check that a run's modalities can come from the inputs; returns the modalities the
    inputs hold but the run does not use (name -> why), saying so when a text-only run is
    given a video. A run with audio or video and no media is a :class:`PredictError`."""
    media = [m for m in modalities if m != "text"]
    if video is None:
        if media:
            raise PredictError(
                f"the run uses {', '.join(modalities)}: give the video (--video FILE) with the "
                "segment list; a transcript alone (--segments FILE) serves only a run trained "
                "on text alone")
        return {}
    ignored = {m: f"the run uses {', '.join(modalities)} only" for m in ("audio", "video")
               if m not in modalities}
    if not media:
        what = ("the recording's audio" if Path(video).suffix.lower() in AUDIO_EXTS
                else "the video's audio and faces")
        log.info(f"note: the run uses text only: predict ignores {what}")
    return ignored


def corpus_from_clips(clips_dir: str | os.PathLike, manifest: str | os.PathLike,
                      labels: Sequence[str]) -> Corpus:
    """Every dialogue of a generic manifest; ``media`` is relative to ``clips_dir``."""
    manifest = Path(manifest)
    clips = Path(clips_dir).resolve()
    if not clips.is_dir():
        raise PredictError(f"{clips_dir}: clips folder not found")
    try:
        corpus = read_manifest(manifest, labels=None)
    except ValueError as e:
        raise PredictError(str(e)) from None
    base = manifest.parent.resolve()
    splits: dict[str, list[Dialogue]] = {}
    for split, dias in corpus.splits.items():
        out = []
        for d in dias:
            utts = []
            for u in d.utterances:
                if not u.media:
                    raise PredictError(f"{u.source}: no media (clip file) for dialogue "
                                       f"{u.dialogue_id}, turn {u.turn}")
                p = Path(u.media)
                try:  # the reader made it absolute against the manifest's folder
                    p = clips / p.relative_to(base)
                except ValueError:
                    pass
                if not p.resolve().is_relative_to(clips):
                    raise PredictError(f"{u.source}: clip {u.media} of dialogue "
                                       f"{u.dialogue_id}, turn {u.turn} is outside the clips "
                                       f"folder {clips}; media paths must stay inside it")
                if not p.exists():
                    raise PredictError(f"{u.source}: clip {p} not found (dialogue "
                                       f"{u.dialogue_id}, turn {u.turn})")
                utts.append(Utterance(u.split, u.dialogue_id, u.turn, u.speaker, u.speaker_idx,
                                      u.label, u.text, str(p), u.start, u.end, u.source))
            out.append(Dialogue(d.split, d.dialogue_id, utts))
        splits[split] = out
    return Corpus(f"predict:{manifest.stem}", list(labels), splits,
                  source={"manifest": str(manifest.resolve()), "clips": str(clips),
                          "manifest_labels": corpus.labels})


# ----------------------------------------------------------------------------- streaming input
def iter_stream_items(video: str | os.PathLike | None = None,
                      segments: str | os.PathLike | None = None,
                      clips_dir: str | os.PathLike | None = None,
                      manifest: str | os.PathLike | None = None,
                      lines: Iterator[str] | None = None, **segment_options: Any
                      ) -> Iterator[dict]:
    """Utterances one at a time for streaming, as ``{"clip" | "features", "speaker", "start",
    "end", "text", "source"}``: from a video + segment list, a segment list alone (a
    transcript, for a text-only run: items without ``clip``), a clips folder + manifest (one
    dialogue after another, ``"new_dialogue": True`` at each start), or JSON lines
    (``{"clip": path, "speaker": ..., "start": s, "end": s, "text": ...}``,
    ``{"text": ..., "speaker": ...}`` for a text-only run, or
    ``{"features": {"audio": [...], "video": null}, "speaker": ...}``).
    ``segment_options`` go to :func:`video_segments`."""
    if video is not None or segments is not None:
        for s in video_segments(video, segments, **segment_options):
            item = {"speaker": s.speaker, "start": s.start, "end": s.end, "text": s.text,
                    "source": s.source, "speaker_source": s.speaker_origin,
                    "speaker_confidence": s.speaker_confidence, "text_source": s.text_origin,
                    "window": s.window}
            yield {"clip": str(video), **item} if video is not None else item
        return
    if clips_dir is not None:
        corpus = corpus_from_clips(clips_dir, manifest, [])
        for dias in corpus.splits.values():
            for d in dias:
                for t, u in enumerate(d.utterances):
                    yield {"clip": u.media, "speaker": u.speaker, "start": u.start,
                           "end": u.end, "text": u.text, "source": u.source,
                           "new_dialogue": t == 0, "dialogue_id": d.dialogue_id}
        return
    for lineno, line in enumerate(lines or [], 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PredictError(f"stdin:{lineno}: not a JSON object ({e})") from None
        if not isinstance(obj, dict) or "speaker" not in obj or \
                not any(k in obj for k in ("clip", "features", "text")):
            raise PredictError(f"stdin:{lineno}: expected an object with 'speaker' and 'clip', "
                               "'text' (a text-only run) or 'features'")
        if "text" in obj and obj["text"] is not None and not isinstance(obj["text"], str):
            raise PredictError(f"stdin:{lineno}: 'text' must be a string, got "
                               f"{type(obj['text']).__name__}")
        for k in ("start", "end"):
            v = obj.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                                  or not math.isfinite(v)):
                raise PredictError(f"stdin:{lineno}: {k!r} must be a finite number of "
                                   f"seconds, got {v!r}")
        obj.setdefault("source", f"stdin:{lineno}")
        yield obj


__all__ = ["AUDIO_EXTS", "MEDIA_EXTS", "SPLIT", "VIDEO_EXTS", "PredictError", "SpeakerTurns",
           "corpus_from_clips", "corpus_from_segments", "iter_stream_items", "media_duration",
           "media_needs", "video_segments"]
