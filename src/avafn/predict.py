"""Emotions for a conversation the model has never seen: media in, predictions and a report out.

::

    from avafn.predict import predict
    predict("runs/av", video="talk.mp4", segments="talk.srt", out_dir="out/talk")
    predict("runs/av", clips_dir="clips/", manifest="clips.csv", out_dir="out/clips")

Steps:

1. **Conversation.** Either one video plus a segment list (:mod:`avafn.segments`: CSV, SRT,
   WebVTT, RTTM), checked against the video's duration, becomes one dialogue whose speakers
   are indexed in order of first appearance; or a folder of per-utterance clips plus a
   generic manifest (:mod:`avafn.data.manifest`; ``media`` relative to the clips folder),
   every dialogue of it.
2. **Features** of exactly the modalities the run was trained on, with the extractors and
   settings recorded in the run's ``config.json`` (``extractors``): wav2vec 2.0 model and
   layer, DAN checkpoint, frame rate and face settings, text encoder. Where the pretrained
   models live on this machine may differ from where they lived at training time:
   ``extractor_models={"audio": ..., "video": ..., "text": ...}`` overrides the paths; the
   rebuilt extractor must then report the same settings (width, layer, pooling, fps, face
   rule, normalisation) or prediction stops with the differences listed. A modality that cannot
   be extracted for an utterance (no face, no audio, no text) is marked missing and the model
   predicts without it; a modality that cannot be extracted at all (text with no text in the
   segments, an extractor predict does not know) is an error.
3. **Model.** Every finished seed of the run predicts the dialogue; the reported
   probabilities are the **mean of the seeds' softmax probabilities** (the label is their
   argmax), and the context attention shown is the mean of the seeds' attention weights.
4. **Outputs** in ``out_dir``: ``predictions.json`` (everything, including the extractor
   settings used and the per-utterance attention), ``predictions.csv`` (one row per
   utterance: times, speaker, label, confidence, one probability column per class, one
   presence column per modality), ``report.html`` (self-contained, :mod:`avafn.report_html`)
   and ``features/`` (the extracted feature store).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avafn.data.corpus import Corpus, Dialogue, Utterance
from avafn.errors import UserError
from avafn.segments import Segment, SegmentError, read_segments, speaker_indices
from avafn.store import FeatureStore, atomic_write_bytes, atomic_write_json

#: the split name of the utterances predict builds from a segment list
SPLIT = "predict"

AUDIO_EXTRACTORS = ("wav2vec2-mean",)
VIDEO_EXTRACTORS = ("dan-faces-mean",)
TEXT_EXTRACTORS = ("sentence-transformers", "hf-mean-pool")
#: config keys that name where a model file lives (may differ between machines)
_PATH_KEYS = {"model_id", "checkpoint", "model_path"}


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


# ----------------------------------------------------------------------------- extractors
def _diff_settings(recorded: Mapping[str, Any], rebuilt: Mapping[str, Any]) -> list[str]:
    """Differences between two extractor metas, ignoring where model files live."""
    out = []
    for k in ("extractor", "width", "layer"):
        if k in recorded and recorded.get(k) != rebuilt.get(k):
            out.append(f"{k}: run {recorded.get(k)!r}, here {rebuilt.get(k)!r}")
    rc, nc = recorded.get("config", {}), rebuilt.get("config", {})
    for k in sorted(set(rc) | set(nc)):
        if k in _PATH_KEYS:
            continue
        a, b = json.loads(json.dumps(rc.get(k))), json.loads(json.dumps(nc.get(k)))
        if a != b:
            out.append(f"config.{k}: run {a!r}, here {b!r}")
    return out


def _model_location(modality: str, meta: Mapping[str, Any], override: str | None,
                    flag: str) -> str:
    if override:
        return str(override)
    cfg = meta.get("config", {})
    loc = meta.get("model_path") or cfg.get("checkpoint") or meta.get("model_id") or \
        cfg.get("model_id")
    if not loc:
        raise PredictError(f"the run does not record which {modality} model it used; pass {flag}")
    return str(loc)


class Featurizer:
    """The run's extractors, rebuilt from its recorded settings (see the module docstring).

    ``extract(corpus, store)`` fills a feature store (batched, via the extraction job);
    calling it on one clip, ``featurizer(path, start, end, text)``, returns
    ``{modality: vector or None}`` (streaming).
    """

    def __init__(self, extractors: dict[str, Any], metas: dict[str, dict],
                 text_encoder: Any | None = None) -> None:
        self.extractors = extractors  # audio / video: job extractors
        self.metas = metas  # modality -> the meta of the rebuilt extractor
        self.text_encoder = text_encoder
        self.last_reasons: dict[str, str] = {}

    @property
    def modalities(self) -> list[str]:
        return list(self.metas)

    @classmethod
    def from_run(cls, desc: Mapping[str, Any], device: str = "cpu",
                 extractor_models: Mapping[str, str] | None = None) -> Featurizer:
        """Rebuild the extractors of every modality of the run ``desc`` (its config.json)."""
        over = dict(extractor_models or {})
        unknown = sorted(set(over) - {"audio", "video", "text"})
        if unknown:
            raise PredictError(f"extractor model override for unknown modality {unknown} "
                               "(audio, video or text)")
        recorded = desc.get("extractors") or {}
        extractors: dict[str, Any] = {}
        metas: dict[str, dict] = {}
        text_encoder = None
        for m in desc["modalities"]:
            meta = recorded.get(m)
            if meta is None:
                raise PredictError(f"the run does not record how its {m!r} features were "
                                   "extracted (no 'extractors' entry in config.json)")
            name = meta.get("extractor")
            cfg = meta.get("config", {})
            if name in AUDIO_EXTRACTORS:
                from avafn.extract.audio import Wav2Vec2Encoder
                from avafn.extract.job import AudioExtractor

                loc = _model_location(m, meta, over.get("audio"), "--audio-model")
                try:
                    enc = Wav2Vec2Encoder(loc, layer=meta.get("layer"), device=device,
                                          max_seconds=float(cfg.get("max_seconds", 30.0)))
                except OSError as e:
                    raise PredictError(f"{m}: cannot load the wav2vec 2.0 model the run used "
                                       f"({loc}): {e}\nPass its location with --audio-model "
                                       "(extractor_models={'audio': ...}).") from None
                ext: Any = AudioExtractor(enc)
                new = ext.meta()
            elif name in VIDEO_EXTRACTORS:
                from avafn.extract.faces import FaceConfig
                from avafn.extract.job import VideoExtractor
                from avafn.extract.video import DANVideoEncoder

                loc = _model_location(m, meta, over.get("video"), "--dan-checkpoint")
                if not Path(loc).is_file():
                    raise PredictError(f"{m}: the DAN checkpoint {loc} the run used is not on "
                                       "this machine; pass its location with --dan-checkpoint "
                                       "(extractor_models={'video': ...})")
                face_kw = {f.name: cfg[f"face_{f.name}"] for f in dataclasses.fields(FaceConfig)
                           if f"face_{f.name}" in cfg}
                try:
                    enc = DANVideoEncoder(loc, device=device)
                except ValueError as e:
                    raise PredictError(f"{m}: {e}") from None
                ext = VideoExtractor(enc, fps=cfg.get("fps"), face_config=FaceConfig(**face_kw))
                new = ext.meta()
            elif name in TEXT_EXTRACTORS:
                from avafn.extract.text import TextEncoder

                loc = _model_location(m, meta, over.get("text"), "--text-model")
                try:
                    text_encoder = TextEncoder(loc, device=device,
                                               normalize=cfg.get("normalize"),
                                               max_length=cfg.get("max_length"))
                except (OSError, RuntimeError, ValueError) as e:
                    raise PredictError(f"{m}: cannot load the text encoder the run used "
                                       f"({loc}): {e}\nPass its location with --text-model "
                                       "(extractor_models={'text': ...}).") from None
                ext = None
                new = dict(text_encoder.meta)
            else:
                known = AUDIO_EXTRACTORS + VIDEO_EXTRACTORS + TEXT_EXTRACTORS
                raise PredictError(
                    f"the checkpoint's {m!r} features came from extractor {name!r}, which "
                    f"predict cannot run on new media (it knows {', '.join(known)}); train on "
                    "features of a known extractor")
            diffs = _diff_settings(meta, new)
            if diffs:
                raise PredictError(f"{m}: the extractor rebuilt here does not match the run's "
                                   "settings: " + "; ".join(diffs))
            if ext is not None:
                extractors[m] = ext
            metas[m] = new
        return cls(extractors, metas, text_encoder)

    # ---- batch: a whole corpus into a store ------------------------------------------------
    def extract(self, corpus: Corpus, store: FeatureStore, progress: bool = False
                ) -> dict[str, dict]:
        """Extract every modality for every utterance of ``corpus`` into ``store``."""
        from avafn.extract.job import run_extraction

        reports: dict[str, dict] = {}
        for m in self.metas:
            if m in self.extractors:
                ext = self.extractors[m]
                ext.modality = m
                rep = run_extraction(corpus, None, store, ext, segments=True, progress=progress)
                reports[m] = rep.to_dict()
            else:
                from avafn.extract.text import extract_text

                utts = corpus.utterances()
                if not any((u.text or "").strip() for u in utts):
                    raise PredictError(
                        "the checkpoint uses text, but no utterance has text: give a segment "
                        "list with transcripts (CSV text column, subtitles) or a manifest with "
                        "a text column")
                reports[m] = extract_text(corpus, store, encoder=self.text_encoder,
                                          progress=progress)
        return reports

    # ---- one clip (streaming) ----------------------------------------------------------------
    def __call__(self, path: str, start: float | None = None, end: float | None = None,
                 text: str | None = None) -> dict[str, np.ndarray | None]:
        from avafn.extract.media import MediaError

        out: dict[str, np.ndarray | None] = {}
        self.last_reasons = {}
        for m in self.metas:
            if m in self.extractors:
                ext = self.extractors[m]
                try:
                    payload = ext.loader(0)(path, start, end)
                    vec, _, reason = ext.process([payload])[0]
                except MediaError as e:
                    vec, reason = None, e.reason
                out[m] = vec
            else:
                t = (text or "").strip()
                vec = self.text_encoder.encode([t])[0] if t else None
                reason = "" if t else "no text"
                out[m] = vec
            if out[m] is None:
                self.last_reasons[m] = reason
        return out


# ----------------------------------------------------------------------------- the model
@torch.no_grad()
def run_models(models: Sequence[torch.nn.Module], dialogue: Dialogue, store: FeatureStore,
               modalities: Sequence[str], widths: Mapping[str, int], device: str = "cpu"
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Mean softmax probabilities (T, C) and mean context attention (T, T) over ``models``,
    plus the present flags (modality -> (T,) bool) of one dialogue's utterances."""
    uids = [u.uid for u in dialogue.utterances]
    feats, present = {}, {}
    for m in modalities:
        x, p = store.load(m, uids, int(widths[m]))
        feats[m] = torch.from_numpy(x).unsqueeze(0).to(device)
        present[m] = torch.from_numpy(p).unsqueeze(0).to(device)
    n_parties = min(int(getattr(getattr(mod, "cfg", None), "n_parties", 10**9))
                    for mod in models)
    spk_idx = [u.speaker_idx for u in dialogue.utterances]
    if max(spk_idx) >= n_parties:
        raise PredictError(
            f"dialogue {dialogue.dialogue_id} has {max(spk_idx) + 1} speakers, but the model "
            f"knows at most {n_parties} parties per dialogue (speakers: "
            f"{list(dict.fromkeys(u.speaker for u in dialogue.utterances))})")
    speaker = torch.tensor([spk_idx], dtype=torch.long, device=device)
    mask = torch.ones(1, len(uids), dtype=torch.bool, device=device)
    probs, atts = [], []
    for model in models:
        model.eval()
        out = model(feats, present, speaker, mask)
        probs.append(torch.softmax(out["logits"][0].float(), -1))
        atts.append(out["context_attention"][0].float())
    prob = torch.stack(probs).mean(0).cpu().numpy()
    att = torch.stack(atts).mean(0).cpu().numpy()
    return prob, att, {m: present[m][0].cpu().numpy() for m in modalities}


# ----------------------------------------------------------------------------- outputs
def _csv_text(rows: list[dict], labels: Sequence[str], modalities: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dialogue_id", "turn", "start", "end", "speaker", "text", "label", "confidence"]
               + [f"p_{lab}" for lab in labels] + [f"present_{m}" for m in modalities])
    for r in rows:
        w.writerow([r["dialogue_id"], r["turn"],
                    "" if r["start"] is None else f"{r['start']:.3f}",
                    "" if r["end"] is None else f"{r['end']:.3f}", r["speaker"],
                    r["text"] or "", r["label"], f"{r['confidence']:.6f}"]
                   + [f"{r['probabilities'][lab]:.6f}" for lab in labels]
                   + [int(r["modalities"][m]) for m in modalities])
    return buf.getvalue()


def _missing_reasons(store: FeatureStore, modalities: Sequence[str]) -> dict[str, dict[str, str]]:
    return {m: dict(store.missing(m)) for m in modalities}


def predict(run_dir: str | os.PathLike, video: str | os.PathLike | None = None,
            segments: str | os.PathLike | None = None, clips_dir: str | os.PathLike | None = None,
            manifest: str | os.PathLike | None = None, *, out_dir: str | os.PathLike,
            device: str = "cpu", extractor_models: Mapping[str, str] | None = None,
            html: bool = True, progress: bool = False) -> dict:
    """Predict the emotion of every utterance of a new conversation (module docstring).

    Give ``video`` + ``segments``, or ``clips_dir`` + ``manifest``. Returns what
    ``predictions.json`` holds.
    """
    from avafn.train import finished_seeds, load_run

    if (video is None) != (segments is None) or (clips_dir is None) != (manifest is None) or \
            (video is None) == (clips_dir is None):
        raise PredictError("give either a video and its segment list, or a clips folder and "
                           "its manifest")
    run = Path(run_dir)
    desc, models = load_run(run, device)
    labels = list(desc["labels"])
    modalities = list(desc["modalities"])
    widths = {m: int(desc["model"]["input_dims"][m]) for m in modalities}
    if video is not None:
        if not Path(video).is_file():
            raise PredictError(f"{video}: video not found")
        corpus = corpus_from_segments(video, video_segments(video, segments), labels)
    else:
        corpus = corpus_from_clips(clips_dir, manifest, labels)
    featurizer = Featurizer.from_run(desc, device, extractor_models)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".features-", dir=out))
    try:
        store = FeatureStore(tmp)
        reports = featurizer.extract(corpus, store, progress=progress)
        missing = _missing_reasons(store, modalities)
        rows: list[dict] = []
        views: list[dict] = []
        for dias in corpus.splits.values():
            for d in dias:
                prob, att, present = run_models(models, d, store, modalities, widths, device)
                drows = []
                for t, u in enumerate(d.utterances):
                    k = int(prob[t].argmax())
                    drows.append({
                        "dialogue_id": d.dialogue_id, "turn": t, "start": u.start, "end": u.end,
                        "speaker": u.speaker, "speaker_idx": u.speaker_idx, "text": u.text,
                        "label": labels[k], "confidence": float(prob[t, k]),
                        "probabilities": {lab: float(v) for lab, v in zip(labels, prob[t])},
                        "modalities": {m: bool(present[m][t]) for m in modalities},
                        "missing_reason": {m: missing[m][u.uid] for m in modalities
                                           if u.uid in missing[m]},
                        "source": u.source, "context_attention": [
                            float(a) for a in att[t, :t]],
                    })
                rows += drows
                views.append({"title": f"{d.dialogue_id}", "rows": drows, "attention": att})
        feat_dir = out / "features"
        if feat_dir.exists():
            shutil.rmtree(feat_dir)
        os.replace(tmp, feat_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "run": str(run.resolve()), "labels": labels, "modalities": modalities,
        "input": ({"video": str(Path(video).resolve()), "segments": str(Path(segments).resolve())}
                  if video is not None else
                  {"clips_dir": str(Path(clips_dir).resolve()),
                   "manifest": str(Path(manifest).resolve())}),
        "models": {"seeds": finished_seeds(run),
                   "averaging": "mean of the seeds' softmax probabilities; label = argmax; "
                                "context attention = mean of the seeds' weights",
                   "bidirectional": bool(desc["model"].get("bidirectional", True))},
        "extractors": featurizer.metas,
        "extraction": reports,
        "utterances": rows,
    }
    atomic_write_json(out / "predictions.json", result)
    atomic_write_bytes(out / "predictions.csv", _csv_text(rows, labels, modalities).encode())
    if html:
        from avafn.report_html import render_report

        name = Path(video).name if video is not None else Path(manifest).name
        meta = {"run": run.name, "seeds averaged": len(models),
                "modalities": ", ".join(modalities), "utterances": len(rows)}
        atomic_write_bytes(out / "report.html", render_report(
            views, labels, f"Emotions in {name}", meta).encode())
    return result


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


def stream_predictions(run_dir: str | os.PathLike, items: Iterator[dict], device: str = "cpu",
                       extractor_models: Mapping[str, str] | None = None) -> Iterator[dict]:
    """Push ``items`` (see :func:`iter_stream_items`) one by one through a
    :class:`~avafn.stream.Streamer`; yields each result as a dict (with latency)."""
    from avafn.stream import Streamer

    s = Streamer(run_dir, device=device, extractor_models=extractor_models)
    for n, it in enumerate(items):
        if it.get("new_dialogue") and n > 0:
            s.reset()
        item = it["features"] if "features" in it else it["clip"]
        r = s.push(item, str(it["speaker"]), start=it.get("start"), end=it.get("end"),
                   text=it.get("text"))
        d = r.to_dict()
        d.update({k: it.get(k) for k in ("start", "end", "text", "source", "dialogue_id")
                  if it.get(k) is not None})
        yield d


__all__ = ["Featurizer", "PredictError", "corpus_from_clips", "corpus_from_segments",
           "iter_stream_items", "media_duration", "predict", "run_models", "stream_predictions"]
