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
   ``predictions.rttm``, ``report.html`` (self-contained, :mod:`avafn.reporting.html`) and
   ``features/`` (the extracted feature store). ``predictions.json`` also holds the warnings
   met on the way (grouped by kind, counted, every place), the modalities the inputs had but
   the run does not use, and the summary the command prints (:mod:`avafn.inference.summary`).
   Every model option (``asr_model``, the extractor locations) is checked before any
   diarization starts.

Many videos at once: :mod:`avafn.inference.batch`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from avafn.inference.inputs import SpeakerTurns
from avafn.inference.outputs import FORMATS, parse_formats
from avafn.inference.predictor import Predictor, check_asr_model, check_inputs, run_models
from avafn.run import Run
from avafn.segments import DEFAULT_MAX_SEGMENTS

if TYPE_CHECKING:
    from avafn.diarize import DiarizeOptions


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

    ``run_dir``: a run folder, or a run already opened (:class:`avafn.run.Run`). The same as
    ``Predictor.from_run(run_dir, ...)(video, ...).save(out_dir, ...)``
    (:class:`avafn.inference.predictor.Predictor`, which keeps the models for many
    conversations), returning ``Predictions.to_dict()``.
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
    check_inputs(video, segments, clips_dir, manifest)
    fmts = [f for f in parse_formats(formats) if html or f != "html"]
    predictor = Predictor.from_run(run_dir, device=device, extractor_models=extractor_models,
                                   diarization=diarization, asr=asr, asr_model=asr_model,
                                   asr_language=asr_language)
    preds = predictor(video, segments, clips_dir, manifest, out_dir=out_dir,
                      overlaps=overlaps, max_segments=max_segments,
                      speaker_turns=speaker_turns, log=log, progress=progress)
    preds.save(out_dir, fmts, index_href=index_href)
    return preds.to_dict()


__all__ = ["FORMATS", "check_asr_model", "predict", "run_models"]
