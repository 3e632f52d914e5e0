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
from collections.abc import Sequence
from typing import Any

from avafn.inference.outputs import FORMATS
from avafn.inference.predictor import Predictor, check_asr_model, check_inputs, run_models
from avafn.run import Run

#: the options of :meth:`Predictor.from_run` (the rest go to the call)
SETUP = ("device", "extractor_models", "diarization", "asr", "asr_model", "asr_language")


def predict(run: str | os.PathLike | Run, *, out_dir: str | os.PathLike,
            formats: Sequence[str] | str | None = None, html: bool = True,
            **options: Any) -> dict:
    """Predict the emotion of every utterance of one conversation and write the outputs
    (module docstring): the same as ::

        p = Predictor.from_run(run, device=..., extractor_models=..., diarization=..., asr=...,
                               asr_model=..., asr_language=...)
        preds = p(video=..., segments=..., clips_dir=..., manifest=..., out_dir=out_dir, ...)
        preds.save(out_dir, formats, html=html)
        return preds.to_dict()

    ``options`` are those of :meth:`Predictor.from_run` (:data:`SETUP`) and of the call
    (:meth:`Predictor.__call__`: the inputs and how they are read). For many conversations,
    build the :class:`~avafn.inference.predictor.Predictor` once instead.
    """
    check_inputs(*(options.get(k) for k in ("video", "segments", "clips_dir", "manifest")))
    setup = {k: options.pop(k) for k in SETUP if k in options}
    preds = Predictor.from_run(run, **setup)(out_dir=out_dir, **options)
    preds.save(out_dir, formats, html=html)
    return preds.to_dict()


__all__ = ["FORMATS", "SETUP", "check_asr_model", "predict", "run_models"]
