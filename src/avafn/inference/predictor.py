"""One inference pipeline: a run's models, extractors and labels built once, then any number of
conversations predicted (and streamed) with them.

::

    from avafn import Predictor
    p = Predictor.from_run("runs/text")                  # seed models, labels: once
    preds = p(segments="talk.srt", out_dir="out/talk")   # a conversation -> Predictions
    preds.save("out/talk", formats="csv,html")           # predictions.json + the formats
    preds.rows[0]["label"], preds.summary["emotions"]
    s = p.stream()                                       # a causal run: the same models

The steps of one call are those of :mod:`avafn.inference.offline` (whose ``predict`` is this
class in one line); every seed's model predicts each dialogue and the reported probabilities are
the mean of the seeds' softmax probabilities (:func:`run_models`, the one place seeds are
averaged).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from avafn.data.corpus import Dialogue
from avafn.diarize import DiarizeError, DiarizeOptions
from avafn.diarize.asr import NO_ASR
from avafn.diarize.segment import make_diarizer
from avafn.inference.featurizer import Featurizer, quiet_loading
from avafn.inference.from_audio import (
    RTTM_NAME,
    needs_text_error,
    segmentation_meta,
    segments_from_audio,
    transcribe_segments,
)
from avafn.inference.inputs import (
    PredictError,
    SpeakerTurns,
    corpus_from_clips,
    corpus_from_segments,
    media_needs,
    video_segments,
)
from avafn.inference.outputs import parse_formats, save
from avafn.inference.summary import row_warnings, summarize, warning_places
from avafn.inference.text_checks import check_texts
from avafn.inference.windows import assign_windows, model_parties, run_windowed
from avafn.io import make_temp_dir
from avafn.model.base import ConversationModel
from avafn.notices import Notices
from avafn.reporting.html import render_report
from avafn.run import Run
from avafn.segments import DEFAULT_MAX_SEGMENTS, speaker_origin, text_origin
from avafn.store import FeatureStore

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from avafn.inference.streaming import Streamer
    from avafn.segments import Segment

AVERAGING = ("mean of the seeds' softmax probabilities; label = argmax; "
             "context attention = mean of the seeds' weights")


# ----------------------------------------------------------------------------- the model
def check_parties(models: Sequence[ConversationModel], dialogue: Dialogue) -> None:
    """Refuse a dialogue with more speakers than the models know parties."""
    n_parties = min(int(mod.cfg.n_parties) for mod in models)
    spk_idx = [u.speaker_idx for u in dialogue.utterances]
    if max(spk_idx) >= n_parties:
        raise PredictError(
            f"dialogue {dialogue.dialogue_id} has {max(spk_idx) + 1} speakers, but the model "
            f"knows at most {n_parties} parties per dialogue (speakers: "
            f"{list(dict.fromkeys(u.speaker for u in dialogue.utterances))})")


@torch.no_grad()
def run_models(models: Sequence[ConversationModel], dialogue: Dialogue, store: FeatureStore,
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


def _missing_reasons(store: FeatureStore, modalities: Sequence[str]) -> dict[str, dict[str, str]]:
    return {m: dict(store.missing(m)) for m in modalities}


# ----------------------------------------------------------------------------- the result
@dataclass
class Predictions:
    """What one conversation gave: the rows (one per utterance), each dialogue's context
    attention, the extractors' settings, the warnings and the summary; :meth:`to_dict` is what
    ``predictions.json`` holds, :meth:`save` writes it and the other output files."""

    run: str  # the run folder (absolute)
    labels: list[str]
    modalities: list[str]
    input: dict[str, Any]  # what was predicted: video / segments, or clips_dir / manifest
    models: dict[str, Any]  # the seeds and how they are averaged
    extractors: dict[str, Any]  # modality -> the extractor settings used
    extraction: dict[str, Any]  # modality -> extraction report (counts, missing)
    rows: list[dict[str, Any]]  # one per utterance (the ``utterances`` of predictions.json)
    ignored_modalities: dict[str, str]  # modality the inputs had but the run does not use -> why
    warnings: dict[str, Any]  # grouped by kind, counted, every place
    dev_f1: dict[str, float] | None  # the run's per-class dev F1, when it was evaluated
    summary: dict[str, Any]  # what the command prints
    #: one per dialogue: ``{"title", "rows", "attention"}`` (attention: (T, T) mean over seeds)
    dialogues: list[dict[str, Any]] = field(default_factory=list, repr=False)
    title: str = "conversation"  # the report's title: the input's file name
    bidirectional: bool = True
    outputs: dict[str, Any] | None = None  # the files written, once saved

    def to_dict(self) -> dict[str, Any]:
        """What ``predictions.json`` holds (``outputs`` once saved)."""
        d = {"run": self.run, "labels": self.labels, "modalities": self.modalities,
             "input": self.input, "models": self.models, "extractors": self.extractors,
             "extraction": self.extraction, "utterances": self.rows,
             "ignored_modalities": self.ignored_modalities, "warnings": self.warnings,
             "dev_f1": self.dev_f1, "summary": self.summary}
        if self.outputs is not None:
            d["outputs"] = self.outputs
        return d

    def report_html(self, formats: Sequence[str] = (), index_href: str | None = None) -> str:
        """The self-contained report page (:mod:`avafn.reporting.html`); ``formats``: the other
        files written beside it (linked from the page)."""
        meta = {"run": Path(self.run).name, "seeds averaged": len(self.models["seeds"]),
                "modalities": ", ".join(self.modalities), "utterances": len(self.rows)}
        return render_report(self.dialogues, self.labels, f"Emotions in {self.title}", meta,
                             extra={"f1": self.dev_f1, "bidirectional": self.bidirectional,
                                    "warnings": self.warnings, "index": index_href,
                                    "csv": "predictions.csv" if "csv" in formats else None,
                                    "files": [f for f in formats if f not in ("html", "json")]})

    def save(self, out_dir: str | os.PathLike, formats: Sequence[str] | str | None = None, *,
             html: bool = True, index_href: str | None = None) -> dict[str, Any]:
        """Write ``predictions.json`` and ``formats`` (:mod:`avafn.inference.outputs`; default
        all; ``html=False`` drops the report) into ``out_dir``; ``index_href``: a link from the
        report back to a batch index. Returns (and keeps in :attr:`outputs`) the files
        written and those skipped, with why."""
        fmts = [f for f in parse_formats(formats) if html or f != "html"]
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        page = self.report_html(fmts, index_href) if "html" in fmts else None
        self.outputs = None
        self.outputs = save(self.to_dict(), out, fmts, html=page)
        return self.outputs


# ----------------------------------------------------------------------------- the pipeline
def check_inputs(video: Any, segments: Any, clips_dir: Any, manifest: Any) -> None:
    """Refuse a combination of inputs that names no conversation."""
    if (clips_dir is None) != (manifest is None) or \
            (segments is None and clips_dir is None and video is None) or \
            (clips_dir is not None and (video is not None or segments is not None)):
        raise PredictError("give a video (with its segment list, if any), a segment list alone "
                           "(a transcript), or a clips folder and its manifest")


class Predictor:
    """A run ready to predict: its seed models and labels, built once (the extractors on first
    use, then kept), with the settings of how a conversation's utterances and text are found
    (module docstring). Build it with :meth:`from_run`; call it once per conversation."""

    def __init__(self, run: Run, models: Sequence[ConversationModel], device: str = "cpu",
                 extractor_models: Mapping[str, str] | None = None,
                 diarization: DiarizeOptions | None = None, asr: str | None = None,
                 asr_model: str | os.PathLike | None = None,
                 asr_language: str | None = None) -> None:
        self.run = run
        self.models = list(models)
        self.device = device
        self.extractor_models = dict(extractor_models or {})
        self.diarization = diarization
        self.asr, self.asr_model, self.asr_language = asr, asr_model, asr_language
        self.labels: list[str] = list(run.labels)
        self.modalities: list[str] = list(run.modalities)
        self.widths: dict[str, int] = dict(run.widths)
        self._featurizer: Featurizer | None = None

    @classmethod
    def from_run(cls, run: str | os.PathLike | Run, device: str = "cpu",
                 extractor_models: Mapping[str, str] | None = None,
                 diarization: DiarizeOptions | None = None, asr: str | None = None,
                 asr_model: str | os.PathLike | None = None,
                 asr_language: str | None = None) -> Predictor:
        """Open ``run`` (a run folder or a :class:`avafn.run.Run`) and load every finished
        seed's model on ``device``. ``extractor_models``: where the pretrained extractors are
        on this machine (``{"audio": wav2vec folder, "video": DAN checkpoint, "text": sentence
        encoder}``). For a video without a segment list: ``diarization`` (its settings),
        ``asr`` (the recognizer: default the packaged Moonshine, or ``transformers`` with
        ``asr_model``, a local model folder; ``"none"``: never) and ``asr_language``."""
        run = Run.open(run) if isinstance(run, str | os.PathLike) else run
        return cls(run, run.models(device), device, extractor_models, diarization, asr,
                   asr_model, asr_language)

    def __repr__(self) -> str:
        return (f"Predictor(run={str(self.run.path)!r}, seeds={len(self.models)}, "
                f"modalities={self.modalities}, labels={self.labels}, device={self.device!r})")

    def featurizer(self, progress: bool = False) -> Featurizer:
        """The run's extractors (built on first use, then kept)."""
        if self._featurizer is None:
            with quiet_loading(not progress):
                self._featurizer = Featurizer.from_run(self.run, self.device,
                                                       self.extractor_models)
        return self._featurizer

    def stream(self, progress: bool = True) -> Streamer:
        """A streaming session (:class:`avafn.inference.streaming.Streamer`) on the same models
        and extractors; the run must be causal (``bidirectional=False``)."""
        from avafn.inference.streaming import Streamer

        return Streamer(self.run, device=self.device, models=self.models,
                        make_featurizer=lambda: self.featurizer(progress), progress=progress)

    def __call__(self, video: str | os.PathLike | None = None,
                 segments: str | os.PathLike | None = None,
                 clips_dir: str | os.PathLike | None = None,
                 manifest: str | os.PathLike | None = None, *, out_dir: str | os.PathLike,
                 overlaps: str = "keep", max_segments: int | None = DEFAULT_MAX_SEGMENTS,
                 speaker_turns: SpeakerTurns | None = None,
                 progress: bool = False) -> Predictions:
        """Predict the emotion of every utterance of one conversation.

        Give ``video`` + ``segments``, ``video`` alone (utterances and speakers found in its
        audio, written to ``out_dir/segments.rttm``), ``segments`` alone (a transcript, for a
        text-only run), or ``clips_dir`` + ``manifest``. ``overlaps`` / ``max_segments`` /
        ``speaker_turns`` (default: diarization of the video, for untagged cues): how the
        segment list is read (:func:`avafn.inference.inputs.video_segments`). Progress and notes
        are logged (``avafn.inference.predictor``), one line each. The extracted features go to
        ``out_dir/features``; the other files are written by :meth:`Predictions.save`.
        """
        check_inputs(video, segments, clips_dir, manifest)
        notices = Notices(examples=10**9)  # every place in the files; the console shows a few
        labels, modalities = self.labels, self.modalities
        ignored: dict[str, str] = {}
        found: dict = {}
        if segments is not None or video is not None:
            segs, found, ignored = self._segments(video, segments, out_dir, overlaps,
                                                  max_segments, speaker_turns, notices,
                                                  progress)
            corpus = corpus_from_segments(video, segs, labels)
        else:
            corpus = corpus_from_clips(clips_dir, manifest, labels)
        featurizer = self.featurizer(progress)
        for ext in featurizer.extractors.values():
            if ext.input == "text":  # text it cannot read, flagged
                check_texts(corpus.utterances(), ext.encoder, notices)
        log.info(f"features: {', '.join(modalities)} for {len(corpus.utterances())} utterances")
        reports, rows, views = self._extract_and_predict(featurizer, corpus, out_dir, progress)
        preds = Predictions(
            run=str(self.run.path.resolve()), labels=labels, modalities=modalities,
            input=_input_record(video, segments, clips_dir, manifest, found),
            models={"seeds": self.run.finished_seeds(), "averaging": AVERAGING,
                    "bidirectional": self.run.bidirectional},
            extractors=featurizer.metas, extraction=reports, rows=rows,
            ignored_modalities=ignored, warnings=notices.to_dict(),
            dev_f1=_dev_f1(self.run.path, labels), summary={}, dialogues=views,
            title=Path(video if video is not None else segments if segments is not None
                       else manifest).name, bidirectional=self.run.bidirectional)
        places = warning_places(preds.warnings)
        for r in rows:  # each row names the warnings that concern it
            r["warnings"] = row_warnings(r, places)
        preds.summary = summarize({k: v for k, v in preds.to_dict().items() if k != "summary"})
        return preds

    def _extract_and_predict(self, featurizer: Featurizer, corpus: Any,
                             out_dir: str | os.PathLike, progress: bool
                             ) -> tuple[dict, list[dict], list[dict]]:
        """The corpus's features extracted into ``out_dir/features`` (put in place whole once
        complete), then every utterance predicted: (extraction reports, rows, dialogue
        views)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(out, ".features-")
        try:
            store = FeatureStore(tmp)
            reports = featurizer.extract(corpus, store, progress=progress)
            log.info(f"model: {len(self.models)} seed(s)")
            rows, views = self._predict_corpus(corpus, store)
            feat_dir = out / "features"
            if feat_dir.exists():
                shutil.rmtree(feat_dir)
            os.replace(tmp, feat_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return reports, rows, views

    def _segments(self, video: Any, segments: Any, out_dir: Any, overlaps: str,
                  max_segments: int | None, speaker_turns: SpeakerTurns | None,
                  notices: Notices, progress: bool
                  ) -> tuple[list[Segment], dict, dict[str, str]]:
        """The utterances of a video and / or segment list, in dialogue windows; what
        ``predictions.json`` records about how they were found; the modalities ignored."""
        modalities, device, diarization = self.modalities, self.device, self.diarization
        if video is not None and not Path(video).is_file():
            raise PredictError(f"{video}: video not found")
        ignored = media_needs(modalities, video)
        if video is not None:  # every model option checked before minutes of diarization
            if "text" in modalities and segments is None and self.asr == NO_ASR:
                raise needs_text_error()  # before any model is loaded
            if self.asr_model is not None and "text" in modalities:
                check_asr_model(self.asr_model)
            _check_diarizer(diarization, device, build=segments is None)
            self.featurizer(progress)
        if segments is not None and speaker_turns is None and video is not None:
            speaker_turns = _diarized_turns(diarization, device)
        segs, found = _video_input(
            video, segments, out_dir, modalities, diarization, self.asr_model,
            self.asr_language, device, self.asr,
            lambda: video_segments(video, segments, overlaps=overlaps,
                                   max_segments=max_segments, notices=notices,
                                   speaker_turns=speaker_turns))
        parties = model_parties(self.models)
        segs = assign_windows(segs, parties)
        where = Path(segments).name if segments is not None else "the audio"
        log.info(f"segments: {len(segs)} utterances, "
            f"{len({s.speaker for s in segs})} speaker(s) from {where}")
        if segs[-1].window:
            log.info(f"windows: {segs[-1].window + 1} dialogue windows of at most "
                f"{parties} speakers (the model's party slots) each")
        return segs, found, ignored

    def _predict_corpus(self, corpus: Any, store: FeatureStore
                        ) -> tuple[list[dict], list[dict]]:
        """One row per utterance and one view (rows, attention) per dialogue."""
        models, labels, modalities = self.models, self.labels, self.modalities
        missing = _missing_reasons(store, modalities)
        rows: list[dict] = []
        views: list[dict] = []
        for dias in corpus.splits.values():
            for d in dias:
                prob, att, present, win = run_windowed(
                    models, d, lambda sub: run_models(models, sub, store, modalities,
                                                      self.widths, self.device), modalities)
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
                        "speaker_source": speaker_origin(u.speaker_source, u.speaker),
                        "speaker_confidence": u.speaker_confidence,
                        "text_source": text_origin(u.text_source, u.text),
                        "window": win[t], "context_attention": [
                            float(att[t, j]) for j in range(t) if win[j] == win[t]],
                    })
                rows += drows
                views.append({"title": f"{d.dialogue_id}", "rows": drows, "attention": att})
        return rows, views


def _input_record(video: Any, segments: Any, clips_dir: Any, manifest: Any,
                  found: Mapping[str, Any]) -> dict[str, Any]:
    """What ``predictions.json`` records of the input: the files given (absolute paths) and
    how the utterances were found."""
    if segments is None and video is None:
        return {"clips_dir": str(Path(clips_dir).resolve()),
                "manifest": str(Path(manifest).resolve())}
    return {"video": str(Path(video).resolve()) if video is not None else None,
            "segments": str(Path(segments or found["segmentation"]["rttm"]).resolve()),
            **found}


def _check_diarizer(diarization: DiarizeOptions | None, device: str, build: bool) -> None:
    """The diarizer's options (and, when it will run, the diarizer itself: its model folder)
    checked before any model is loaded."""
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
                 read_given: Callable[[], list[Segment]]) -> tuple[list[Segment], dict]:
    """The segments of a video: read from ``segments``, or found in its audio; those without
    text transcribed by speech recognition when the run uses text (unless ``asr`` is
    ``"none"``). Also returns what ``predictions.json`` records about it (``segmentation``,
    ``asr``)."""
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
            log.info(f"speech recognition ({found['asr']['asr']}): text of "
                f"{found['asr']['transcribed']} utterance(s)")
        elif not any((s.text or "").strip() for s in segs):
            raise needs_text_error()
    return segs, found


def _diarized_turns(diarization: DiarizeOptions | None, device: str) -> SpeakerTurns:
    """Speaker turns of a video by the diarizer, for subtitle cues without a speaker tag."""

    def turns(media: str, _segments: Sequence[Segment]) -> list:
        from avafn.diarize import speaker_turns

        return speaker_turns(media, diarization or DiarizeOptions(device=device))

    return turns


__all__ = ["AVERAGING", "Predictions", "Predictor", "check_asr_model", "check_inputs",
           "check_parties", "run_models"]
