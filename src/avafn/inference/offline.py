"""Emotions for a conversation the model has never seen: media in, predictions and a report out.

::

    from avafn.inference import predict
    predict("runs/av", video="talk.mp4", segments="talk.srt", out_dir="out/talk")
    predict("runs/av", clips_dir="clips/", manifest="clips.csv", out_dir="out/clips")
    predict("runs/text", segments="talk.srt", out_dir="out/talk")  # a transcript alone

Steps:

1. **Conversation** (:mod:`avafn.inference.inputs`): a video plus a segment list, a segment
   list alone (text-only runs), or a folder of per-utterance clips plus a generic manifest; or
   a video alone, whose utterances and speakers are found in its audio and written to
   ``segments.rttm``, and whose text, when the run uses text, speech recognition transcribes
   (offline Moonshine by default; :mod:`avafn.inference.from_audio`). Subtitle cues without
   a speaker tag take their speaker from diarization of the video's audio.
2. **Features** of exactly the modalities the run was trained on, with the extractors and
   settings recorded in the run (:class:`avafn.inference.featurizer.Featurizer`).
3. **Model.** Every finished seed of the run predicts the dialogue; the reported
   probabilities are the **mean of the seeds' softmax probabilities** (the label is their
   argmax), and the context attention shown is the mean of the seeds' attention weights.
4. **Outputs** in ``out_dir``: ``predictions.json`` (everything, including the extractor
   settings used and the per-utterance attention), ``predictions.csv`` (one row per
   utterance: times, speaker, label, confidence, one probability column per class, one
   presence column per modality), ``report.html`` (self-contained, :mod:`avafn.report_html`)
   and ``features/`` (the extracted feature store). ``predictions.json`` also holds the
   warnings met on the way (grouped by kind, counted), the modalities the inputs had but the
   run does not use, and the summary the command prints (:mod:`avafn.inference.summary`).

Many videos at once: :mod:`avafn.inference.batch`.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from avafn.data.corpus import Dialogue
from avafn.inference.featurizer import quiet_loading
from avafn.inference.inputs import (
    PredictError,
    SpeakerTurns,
    corpus_from_clips,
    corpus_from_segments,
    media_needs,
    video_segments,
)
from avafn.inference.summary import summarize
from avafn.inference.text_checks import check_texts
from avafn.notices import Notices
from avafn.run import Run
from avafn.segments import DEFAULT_MAX_SEGMENTS
from avafn.store import FeatureStore, atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from avafn.diarize import DiarizeOptions
    from avafn.segments import Segment


# ----------------------------------------------------------------------------- the model
def check_parties(models: Sequence[torch.nn.Module], dialogue: Dialogue) -> None:
    """Refuse a dialogue with more speakers than the models know parties."""
    n_parties = min(int(getattr(getattr(mod, "cfg", None), "n_parties", 10**9))
                    for mod in models)
    spk_idx = [u.speaker_idx for u in dialogue.utterances]
    if max(spk_idx) >= n_parties:
        raise PredictError(
            f"dialogue {dialogue.dialogue_id} has {max(spk_idx) + 1} speakers, but the model "
            f"knows at most {n_parties} parties per dialogue (speakers: "
            f"{list(dict.fromkeys(u.speaker for u in dialogue.utterances))})")


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
    check_parties(models, dialogue)
    spk_idx = [u.speaker_idx for u in dialogue.utterances]
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


def predict(run_dir: str | os.PathLike | Run, video: str | os.PathLike | None = None,
            segments: str | os.PathLike | None = None, clips_dir: str | os.PathLike | None = None,
            manifest: str | os.PathLike | None = None, *, out_dir: str | os.PathLike,
            device: str = "cpu", extractor_models: Mapping[str, str] | None = None,
            html: bool = True, progress: bool = False, overlaps: str = "trim",
            max_segments: int | None = DEFAULT_MAX_SEGMENTS,
            speaker_turns: SpeakerTurns | None = None,
            log: Callable[[str], None] | None = None,
            diarization: DiarizeOptions | None = None,
            asr_model: str | os.PathLike | None = None, asr_language: str | None = None,
            asr: str | None = None) -> dict:
    """Predict the emotion of every utterance of a new conversation (module docstring).

    ``run_dir``: a run folder, or a run already opened (:class:`avafn.run.Run`, or
    :class:`avafn.inference.batch.ReusedRun` to build its models once for many videos).
    Give ``video`` + ``segments``, ``video`` alone (utterances and speakers found in its audio
    with ``diarization``'s settings, written to ``out_dir/segments.rttm``), ``segments`` alone
    (a transcript, for a text-only run), or ``clips_dir`` + ``manifest``. Utterances without
    text, when the run uses text, are transcribed by speech recognition: ``asr`` names the
    recognizer (default: the packaged Moonshine, or ``transformers`` with ``asr_model``, a
    local model folder; ``"none"``: never). ``speaker_turns`` (default: diarization of the
    video) names untagged cues. ``overlaps`` / ``max_segments`` / ``speaker_turns``: how the
    segment list is read (:func:`avafn.inference.inputs.video_segments`); ``log`` receives
    progress and notes, one line each. Returns what ``predictions.json`` holds, including
    ``warnings`` (grouped, counted) and ``summary`` (:mod:`avafn.inference.summary`).
    """
    if (clips_dir is None) != (manifest is None) or \
            (segments is None and clips_dir is None and video is None) or \
            (clips_dir is not None and (video is not None or segments is not None)):
        raise PredictError("give a video (with its segment list, if any), a segment list alone "
                           "(a transcript), or a clips folder and its manifest")
    say = log or (lambda _line: None)
    notices = Notices()
    run = Run.open(run_dir) if isinstance(run_dir, str | os.PathLike) else run_dir
    models = run.models(device)
    labels, modalities, widths = run.labels, run.modalities, run.widths
    ignored: dict[str, str] = {}
    found: dict = {}
    if segments is not None or video is not None:
        if video is not None and not Path(video).is_file():
            raise PredictError(f"{video}: video not found")
        ignored = media_needs(modalities, video, say)
        if segments is not None and speaker_turns is None and video is not None:
            speaker_turns = _diarized_turns(diarization, device)
        segs, found = _video_input(
            video, segments, out_dir, modalities, diarization, asr_model, asr_language, device,
            asr, say, lambda: video_segments(video, segments, overlaps=overlaps,
                                             max_segments=max_segments, notices=notices,
                                             speaker_turns=speaker_turns, log=say))
        corpus = corpus_from_segments(video, segs, labels)
        where = Path(segments).name if segments is not None else "the video's audio"
        say(f"segments: {len(segs)} utterances, "
            f"{len({s.speaker for s in segs})} speaker(s) from {where}")
    else:
        corpus = corpus_from_clips(clips_dir, manifest, labels)
    for dias in corpus.splits.values():  # before any extraction
        for d in dias:
            check_parties(models, d)
    with quiet_loading(not progress):
        featurizer = run.featurizer(device, extractor_models)
    for ext in featurizer.extractors.values():
        if getattr(ext, "input", "media") == "text":  # text it cannot read, flagged
            check_texts(corpus.utterances(), getattr(ext, "encoder", None), notices)
    say(f"features: {', '.join(modalities)} for {len(corpus.utterances())} utterances")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".features-", dir=out))
    try:
        store = FeatureStore(tmp)
        reports = featurizer.extract(corpus, store, progress=progress)
        missing = _missing_reasons(store, modalities)
        rows: list[dict] = []
        views: list[dict] = []
        say(f"model: {len(models)} seed(s)")
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
        "run": str(run.path.resolve()), "labels": labels, "modalities": modalities,
        "input": ({"video": str(Path(video).resolve()) if video is not None else None,
                   "segments": str(Path(segments or found["segmentation"]["rttm"]).resolve()),
                   **found}
                  if segments is not None or video is not None else
                  {"clips_dir": str(Path(clips_dir).resolve()),
                   "manifest": str(Path(manifest).resolve())}),
        "models": {"seeds": run.finished_seeds(),
                   "averaging": "mean of the seeds' softmax probabilities; label = argmax; "
                                "context attention = mean of the seeds' weights",
                   "bidirectional": run.bidirectional},
        "extractors": featurizer.metas,
        "extraction": reports,
        "utterances": rows,
        "ignored_modalities": ignored,
        "warnings": notices.to_dict(),
    }
    result["summary"] = summarize(result)
    atomic_write_json(out / "predictions.json", result)
    atomic_write_bytes(out / "predictions.csv", _csv_text(rows, labels, modalities).encode())
    if html:
        from avafn.report_html import render_report

        name = Path(video if video is not None else segments if segments is not None
                    else manifest).name
        meta = {"run": run.path.name, "seeds averaged": len(models),
                "modalities": ", ".join(modalities), "utterances": len(rows)}
        atomic_write_bytes(out / "report.html", render_report(
            views, labels, f"Emotions in {name}", meta).encode())
    return result


def _video_input(video: str | os.PathLike, segments: str | os.PathLike | None,
                 out_dir: str | os.PathLike, modalities: Sequence[str],
                 diarization: DiarizeOptions | None, asr_model: str | os.PathLike | None,
                 asr_language: str | None, device: str, asr: str | None,
                 say: Callable[[str], None],
                 read_given: Callable[[], list[Segment]]) -> tuple[list[Segment], dict]:
    """The segments of a video: read from ``segments``, or found in its audio; those without
    text transcribed by speech recognition when the run uses text (unless ``asr`` is
    ``"none"``). Also returns what ``predictions.json`` records about it (``segmentation``,
    ``asr``)."""
    from avafn.diarize import DiarizeOptions
    from avafn.diarize.asr import NO_ASR
    from avafn.inference.from_audio import (
        RTTM_NAME,
        needs_text_error,
        segmentation_meta,
        segments_from_audio,
        transcribe_segments,
    )

    found: dict = {}
    if segments is not None:
        segs = read_given()
    else:
        if "text" in modalities and asr == NO_ASR:
            raise needs_text_error()  # before minutes of diarization
        options = diarization or DiarizeOptions(device=device)
        segs = segments_from_audio(video, out_dir, options)
        found["segmentation"] = segmentation_meta(options, segs, Path(out_dir) / RTTM_NAME)
    if "text" in modalities and not all((s.text or "").strip() for s in segs):
        if asr != NO_ASR and video is not None:
            segs, found["asr"] = transcribe_segments(video, segs, asr_model, device,
                                                     asr_language, asr)
            say(f"speech recognition ({found['asr']['asr']}): text of "
                f"{found['asr']['transcribed']} utterance(s)")
        elif not any((s.text or "").strip() for s in segs):
            raise needs_text_error()
    return segs, found


def _diarized_turns(diarization: DiarizeOptions | None, device: str) -> SpeakerTurns:
    """Speaker turns of a video by the diarizer, for subtitle cues without a speaker tag."""

    def turns(media: str, _segments: Sequence[Segment]) -> list:
        from avafn.diarize import DiarizeOptions, speaker_turns

        return speaker_turns(media, diarization or DiarizeOptions(device=device))

    return turns


__all__ = ["predict", "run_models"]
