"""Emotions for a conversation the model has never seen: media in, predictions and a report out.

::

    from avafn.inference import predict
    predict("runs/av", video="talk.mp4", segments="talk.srt", out_dir="out/talk")
    predict("runs/av", clips_dir="clips/", manifest="clips.csv", out_dir="out/clips")

Steps:

1. **Conversation** (:mod:`avafn.inference.inputs`): a video plus a segment list, or a folder
   of per-utterance clips plus a generic manifest.
2. **Features** of exactly the modalities the run was trained on, with the extractors and
   settings recorded in the run (:class:`avafn.inference.featurizer.Featurizer`).
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
import io
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from avafn.data.corpus import Dialogue
from avafn.inference.featurizer import quiet_loading
from avafn.inference.inputs import (
    PredictError,
    corpus_from_clips,
    corpus_from_segments,
    video_segments,
)
from avafn.run import Run
from avafn.store import FeatureStore, atomic_write_bytes, atomic_write_json


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
    if (video is None) != (segments is None) or (clips_dir is None) != (manifest is None) or \
            (video is None) == (clips_dir is None):
        raise PredictError("give either a video and its segment list, or a clips folder and "
                           "its manifest")
    run = Run.open(run_dir)
    models = run.models(device)
    labels, modalities, widths = run.labels, run.modalities, run.widths
    if video is not None:
        if not Path(video).is_file():
            raise PredictError(f"{video}: video not found")
        corpus = corpus_from_segments(video, video_segments(video, segments), labels)
    else:
        corpus = corpus_from_clips(clips_dir, manifest, labels)
    with quiet_loading(not progress):
        featurizer = run.featurizer(device, extractor_models)

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
        "run": str(run.path.resolve()), "labels": labels, "modalities": modalities,
        "input": ({"video": str(Path(video).resolve()), "segments": str(Path(segments).resolve())}
                  if video is not None else
                  {"clips_dir": str(Path(clips_dir).resolve()),
                   "manifest": str(Path(manifest).resolve())}),
        "models": {"seeds": run.finished_seeds(),
                   "averaging": "mean of the seeds' softmax probabilities; label = argmax; "
                                "context attention = mean of the seeds' weights",
                   "bidirectional": run.bidirectional},
        "extractors": featurizer.metas,
        "extraction": reports,
        "utterances": rows,
    }
    atomic_write_json(out / "predictions.json", result)
    atomic_write_bytes(out / "predictions.csv", _csv_text(rows, labels, modalities).encode())
    if html:
        from avafn.report_html import render_report

        name = Path(video).name if video is not None else Path(manifest).name
        meta = {"run": run.path.name, "seeds averaged": len(models),
                "modalities": ", ".join(modalities), "utterances": len(rows)}
        atomic_write_bytes(out / "report.html", render_report(
            views, labels, f"Emotions in {name}", meta).encode())
    return result


__all__ = ["predict", "run_models"]
