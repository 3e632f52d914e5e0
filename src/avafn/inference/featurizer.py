"""The run's feature extractors, rebuilt from the settings recorded in its ``config.json``.

Where the pretrained models live on this machine may differ from where they lived at training
time: ``extractor_models={"audio": ..., "video": ..., "text": ...}`` overrides the paths; the
rebuilt extractor must then report the same settings (width, layer, pooling, fps, face rule,
normalisation) or it is refused with the differences listed. A modality that cannot be
extracted for an utterance (no face, no audio, no text) is marked missing; a modality that
cannot be extracted at all (text with no text in the input, an unknown extractor) is an error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avafn.data.corpus import Corpus
from avafn.inference.inputs import PredictError
from avafn.store import FeatureStore

AUDIO_EXTRACTORS = ("wav2vec2-mean",)
VIDEO_EXTRACTORS = ("dan-faces-mean",)
TEXT_EXTRACTORS = ("sentence-transformers", "hf-mean-pool")
#: config keys that name where a model file lives (may differ between machines)
_PATH_KEYS = {"model_id", "checkpoint", "model_path"}


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


__all__ = ["Featurizer"]
