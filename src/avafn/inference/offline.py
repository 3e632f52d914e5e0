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
4. **Outputs** in ``out_dir`` (:mod:`avafn.inference.outputs`, ``formats``; default all):
   ``predictions.json`` (everything, including the extractor settings used, the
   per-utterance attention, the run's per-class dev F1 and the files written), and
   ``predictions.csv`` / ``.jsonl`` (one row per utterance: times, speaker, label, confidence,
   one probability column per class, one presence column per modality, and its provenance:
   ``speaker_source``, ``speaker_confidence``, ``text_source``, ``source``, ``window``, plus
   the ``warnings`` that concern it), emotion-tagged subtitles ``predictions.srt`` / ``.vtt``,
   ``predictions.rttm``, ``report.html`` (self-contained, :mod:`avafn.report_html`) and
   ``features/`` (the extracted feature store). ``predictions.json`` also holds the warnings
   met on the way (grouped by kind, counted, every place), the modalities the inputs had but
   the run does not use, and the summary the command prints (:mod:`avafn.inference.summary`).
   Every model option (``asr_model``, the extractor locations) is checked before any
   diarization starts.

Many videos at once: :mod:`avafn.inference.batch`.
"""

from __future__ import annotations

import json
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
from avafn.inference.outputs import FORMATS, parse_formats, save
from avafn.inference.summary import row_warnings, summarize, warning_places
from avafn.inference.text_checks import check_texts
from avafn.inference.windows import assign_windows, model_parties, run_windowed
from avafn.notices import Notices
from avafn.run import Run
from avafn.segments import DEFAULT_MAX_SEGMENTS
from avafn.store import FeatureStore

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
def _missing_reasons(store: FeatureStore, modalities: Sequence[str]) -> dict[str, dict[str, str]]:
    return {m: dict(store.missing(m)) for m in modalities}


def predict(run_dir: str | os.PathLike | Run, video: str | os.PathLike | None = None,
            segments: str | os.PathLike | None = None, clips_dir: str | os.PathLike | None = None,
            manifest: str | os.PathLike | None = None, *, out_dir: str | os.PathLike,
            device: str = "cpu", extractor_models: Mapping[str, str] | None = None,
            html: bool = True, progress: bool = False, overlaps: str = "keep",
            max_segments: int | None = DEFAULT_MAX_SEGMENTS,
            speaker_turns: SpeakerTurns | None = None,
            log: Callable[[str], None] | None = None,
            diarization: DiarizeOptions | None = None,
            asr_model: str | os.PathLike | None = None, asr_language: str | None = None,
            formats: Sequence[str] | str | None = None, index_href: str | None = None,
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
    progress and notes, one line each. ``formats``: the output files
    (:mod:`avafn.inference.outputs`; default all; ``html=False`` drops the report);
    ``index_href``: a link from the report back to a batch index. Returns what
    ``predictions.json`` holds, including ``warnings`` (grouped, counted, every place) and
    ``summary`` (:mod:`avafn.inference.summary`).
    """
    if (clips_dir is None) != (manifest is None) or \
            (segments is None and clips_dir is None and video is None) or \
            (clips_dir is not None and (video is not None or segments is not None)):
        raise PredictError("give a video (with its segment list, if any), a segment list alone "
                           "(a transcript), or a clips folder and its manifest")
    fmts = [f for f in parse_formats(formats) if html or f != "html"]
    say = log or (lambda _line: None)
    notices = Notices(examples=10**9)  # every place in the files; the console shows a few
    run = Run.open(run_dir) if isinstance(run_dir, str | os.PathLike) else run_dir
    models = run.models(device)
    labels, modalities, widths = run.labels, run.modalities, run.widths
    ignored: dict[str, str] = {}
    found: dict = {}
    if segments is not None or video is not None:
        if video is not None and not Path(video).is_file():
            raise PredictError(f"{video}: video not found")
        ignored = media_needs(modalities, video, say)
        if video is not None:  # every model option checked before minutes of diarization
            from avafn.diarize.asr import NO_ASR

            if "text" in modalities and segments is None and asr == NO_ASR:
                from avafn.inference.from_audio import needs_text_error

                raise needs_text_error()  # before any model is loaded
            if asr_model is not None and "text" in modalities:
                check_asr_model(asr_model)
            _check_diarizer(diarization, device, build=segments is None)
            with quiet_loading(not progress):
                featurizer = run.featurizer(device, extractor_models)
        if segments is not None and speaker_turns is None and video is not None:
            speaker_turns = _diarized_turns(diarization, device)
        segs, found = _video_input(
            video, segments, out_dir, modalities, diarization, asr_model, asr_language, device,
            asr, say, lambda: video_segments(video, segments, overlaps=overlaps,
                                             max_segments=max_segments, notices=notices,
                                             speaker_turns=speaker_turns, log=say))
        segs = assign_windows(segs, model_parties(models))
        corpus = corpus_from_segments(video, segs, labels)
        where = Path(segments).name if segments is not None else "the video's audio"
        say(f"segments: {len(segs)} utterances, "
            f"{len({s.speaker for s in segs})} speaker(s) from {where}")
        if segs[-1].window:
            say(f"windows: {segs[-1].window + 1} dialogue windows of at most "
                f"{model_parties(models)} speakers (the model's party slots) each")
    else:
        corpus = corpus_from_clips(clips_dir, manifest, labels)
    if video is None:
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
                prob, att, present, win = run_windowed(
                    models, d, lambda sub: run_models(models, sub, store, modalities, widths,
                                                      device), modalities)
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
                        "source": u.source,
                        "speaker_source": u.speaker_source or (
                            "unknown" if u.speaker in (None, "", "unknown") else "tag"),
                        "speaker_confidence": u.speaker_confidence,
                        "text_source": u.text_source or ("subtitle" if u.text else "none"),
                        "window": win[t], "context_attention": [
                            float(att[t, j]) for j in range(t) if win[j] == win[t]],
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
        "dev_f1": _dev_f1(run.path, labels),
    }
    places = warning_places(result["warnings"])
    for r in rows:  # each row names the warnings that concern it
        r["warnings"] = row_warnings(r, places)
    result["summary"] = summarize(result)
    page = None
    if "html" in fmts:
        from avafn.report_html import render_report

        name = Path(video if video is not None else segments if segments is not None
                    else manifest).name
        meta = {"run": run.path.name, "seeds averaged": len(models),
                "modalities": ", ".join(modalities), "utterances": len(rows)}
        page = render_report(views, labels, f"Emotions in {name}", meta, extra={
            "f1": result["dev_f1"], "bidirectional": run.bidirectional,
            "warnings": result["warnings"], "index": index_href,
            "csv": "predictions.csv" if "csv" in fmts else None,
            "files": [f for f in fmts if f not in ("html", "json")]})
    result["outputs"] = save(result, out, fmts, html=page)
    return result


def _check_diarizer(diarization: DiarizeOptions | None, device: str, build: bool) -> None:
    """The diarizer's options (and, when it will run, the diarizer itself: its model folder)
    checked before any model is loaded."""
    from avafn.diarize import DiarizeError, DiarizeOptions
    from avafn.diarize.segment import make_diarizer

    options = diarization or DiarizeOptions(device=device)
    try:
        make_diarizer(options) if build else options.check()
    except DiarizeError as e:
        raise PredictError(str(e)) from None


def check_asr_model(asr_model: str | os.PathLike) -> None:
    """Refuse an ``--asr-model`` that is not a local transformers model folder, at once (its
    configuration read, no weights loaded, no code run)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(asr_model), trust_remote_code=False,
                                   local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PredictError(f"--asr-model {asr_model}: not a local speech-recognition model "
                           f"folder (a transformers folder with config.json, e.g. a Whisper "
                           f"checkpoint): {first}") from None


def _dev_f1(run_dir: Path, labels: Sequence[str]) -> dict[str, float] | None:
    """The run's per-class dev F1 (percent, mean over seeds) from its ``report.json`` (or a
    ``report-<split>.json``: each holds the dev scores), or ``None`` when the run was not
    evaluated."""
    run_dir = Path(run_dir)
    for path in [run_dir / "report.json", *sorted(run_dir.glob("report-*.json"))]:
        try:
            per = json.loads(path.read_text())["dev"]["per_class"]
            return {lab: round(float(per[lab]["f1"]), 2) for lab in labels if lab in per}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


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
        segs = segments_from_audio(video, out_dir, options, log=say)
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


__all__ = ["FORMATS", "predict", "run_models"]
