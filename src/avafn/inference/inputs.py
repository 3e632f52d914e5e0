"""Conversations in: a video cut by a segment list, or a folder of clips with a manifest, as a
:class:`~avafn.data.corpus.Corpus`; and the same inputs one utterance at a time for streaming.

- a video plus a segment list (:mod:`avafn.segments`: CSV, SRT, WebVTT, RTTM), checked against
  the video's duration, becomes one dialogue (split ``"predict"``) whose speakers are indexed
  in order of first appearance;
- a folder of per-utterance clips plus a generic manifest (:mod:`avafn.data.manifest`;
  ``media`` relative to the clips folder) gives every dialogue of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.errors import UserError
from avafn.segments import Segment, SegmentError, read_segments, speaker_indices

#: the split name of the utterances predict builds from a segment list
SPLIT = "predict"


class PredictError(UserError):
    """Inputs that cannot be predicted on: bad segments, unextractable modalities, ..."""


# ----------------------------------------------------------------------------- media
def media_duration(path: str | os.PathLike) -> float:
    """Duration of a media file in seconds (container, else longest stream)."""
    import av

    from avafn.extract.media import MediaError, declared_end, open_media

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
def video_segments(video: str | os.PathLike, segments: str | os.PathLike) -> list[Segment]:
    """The segment list of ``video``, checked against the video's duration."""
    try:
        return read_segments(segments, duration=media_duration(video))
    except SegmentError as e:
        raise PredictError(str(e)) from None


def corpus_from_segments(video: str | os.PathLike, segments: Sequence[Segment],
                         labels: Sequence[str], dialogue_id: str | None = None) -> Corpus:
    """One dialogue (split ``"predict"``) whose utterances cut ``video`` at the segments."""
    video = str(Path(video).resolve())
    dia = dialogue_id or Path(video).stem
    idx = speaker_indices(list(segments))
    utts = [Utterance(SPLIT, dia, t, s.speaker, idx[s.speaker], None, s.text, video, s.start,
                      s.end, s.source) for t, s in enumerate(segments)]
    return Corpus(f"predict:{dia}", list(labels), {SPLIT: [Dialogue(SPLIT, dia, utts)]},
                  source={"video": video, "segments": segments[0].source.rsplit(":", 1)[0]})


def corpus_from_clips(clips_dir: str | os.PathLike, manifest: str | os.PathLike,
                      labels: Sequence[str]) -> Corpus:
    """Every dialogue of a generic manifest; ``media`` is relative to ``clips_dir``."""
    from avafn.data.manifest import read_manifest

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
                      lines: Iterator[str] | None = None) -> Iterator[dict]:
    """Utterances one at a time for streaming, as ``{"clip" | "features", "speaker", "start",
    "end", "text", "source"}``: from a video + segment list, a clips folder + manifest (one
    dialogue after another, ``"new_dialogue": True`` at each start), or JSON lines
    (``{"clip": path, "speaker": ..., "start": s, "end": s, "text": ...}`` or
    ``{"features": {"audio": [...], "video": null}, "speaker": ...}``)."""
    if video is not None:
        for s in video_segments(video, segments):
            yield {"clip": str(video), "speaker": s.speaker, "start": s.start, "end": s.end,
                   "text": s.text, "source": s.source}
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
                ("clip" not in obj and "features" not in obj):
            raise PredictError(f"stdin:{lineno}: expected an object with 'speaker' and 'clip' "
                               "or 'features'")
        obj.setdefault("source", f"stdin:{lineno}")
        yield obj


__all__ = ["SPLIT", "PredictError", "corpus_from_clips", "corpus_from_segments",
           "iter_stream_items", "media_duration", "video_segments"]
