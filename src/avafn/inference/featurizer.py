"""The run's feature extractors, rebuilt from the settings recorded in its ``config.json``.

Each extractor is rebuilt by name from its record (:func:`avafn.extract.registry.rebuild`).
Where the pretrained models live on this machine may differ from where they lived at training
time: ``extractor_models={"audio": ..., "video": ..., "text": ...}`` overrides the paths; the
rebuilt extractor must then report the same settings (width, layer, pooling, fps, face rule,
normalisation) or it is refused with the differences listed. A modality that cannot be
extracted for an utterance (no face, no audio, no text) is marked missing; a modality that
cannot be extracted at all (text with no text in the input, an unknown extractor) is an error.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from avafn.data.corpus import Corpus
from avafn.extract.job import _tasks, run_extraction
from avafn.extract.media import MediaError, release_readers
from avafn.extract.registry import ExtractorError, extractor_class, rebuild, setting_differences
from avafn.inference.inputs import PredictError
from avafn.run import Run
from avafn.store import FeatureStore

#: the command-line option that overrides where each kind of extractor's model lives
_MODEL_FLAGS = {"audio": "--audio-model", "video": "--dan-checkpoint", "text": "--text-model"}


@contextmanager
def quiet_loading(quiet: bool = True) -> Iterator[None]:
    """With ``quiet``, no progress bar while pretrained models load (transformers' own)."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


class Featurizer:
    """The run's extractors, rebuilt from its recorded settings (see the module docstring).

    ``extract(corpus, store)`` fills a feature store (batched, via the extraction job);
    calling it on one clip, ``featurizer(path, start, end, text)``, returns
    ``{modality: vector or None}`` (streaming). Every registered extractor works here
    (:func:`avafn.extract.registry.rebuild`): there is no per-extractor code.
    """

    def __init__(self, extractors: dict[str, Any], metas: dict[str, dict]) -> None:
        self.extractors = extractors  # modality -> extractor (avafn.extract.base.Extractor)
        self.metas = metas  # modality -> the meta of the rebuilt extractor
        self.last_reasons: dict[str, str] = {}

    @property
    def modalities(self) -> list[str]:
        return list(self.metas)

    @classmethod
    def from_run(cls, run: Run | Mapping[str, Any], device: str = "cpu",
                 extractor_models: Mapping[str, str] | None = None) -> Featurizer:
        """Rebuild the extractors of every modality of ``run`` (an opened run, or the
        ``modalities`` and ``extractors`` of its config.json).

        ``extractor_models`` maps a modality (``audio``, ``audio-l12``, ...) or an extractor
        kind (``audio``, ``video``, ``text``) to where its model lives on this machine."""
        over = dict(extractor_models or {})
        desc = {"modalities": run.modalities, "extractors": run.extractors} \
            if isinstance(run, Run) else run
        modalities = list(desc["modalities"])
        unknown = sorted(set(over) - set(modalities) - set(_MODEL_FLAGS))
        if unknown:
            raise PredictError(f"extractor model override for unknown modality {unknown} "
                               f"(the run's: {', '.join(modalities)}; or audio, video, text)")
        recorded = desc.get("extractors") or {}
        extractors: dict[str, Any] = {}
        metas: dict[str, dict] = {}
        for m in modalities:
            meta = recorded.get(m)
            if meta is None:
                raise PredictError(f"the run does not record how its {m!r} features were "
                                   "extracted (no 'extractors' entry in config.json)")
            name = meta.get("extractor")
            try:
                cls_ = extractor_class(str(name))
            except ExtractorError as e:
                raise PredictError(f"the checkpoint's {m!r} features came from extractor "
                                   f"{name!r}, which predict cannot run on new media ({e}); "
                                   "install the plug-in that provides it") from None
            kind = cls_.kind
            try:
                flag = _MODEL_FLAGS.get(kind, "extractor_models")
                ext = rebuild({**meta, "modality": m}, device=device,
                              model_override=over.get(m) or over.get(kind))
            except ExtractorError as e:
                raise PredictError(f"{m}: {e} (pass it with {flag}, extractor_models="
                                   f"{{{m!r}: ...}})") from None
            new = ext.meta()
            diffs = setting_differences(meta, new, names=("run", "here"))
            if diffs:
                raise PredictError(f"{m}: the extractor rebuilt here does not match the run's "
                                   "settings: " + "; ".join(diffs))
            extractors[m] = ext
            metas[m] = new
        return cls(extractors, metas)

    # ---- batch: a whole corpus into a store ------------------------------------------------
    def extract(self, corpus: Corpus, store: FeatureStore, progress: bool = False
                ) -> dict[str, dict]:
        """Extract every modality for every utterance of ``corpus`` into ``store``."""
        for m, ext in self.extractors.items():
            if ext.input == "text" and \
                    not any((u.text or "").strip() for u in corpus.utterances()):
                raise PredictError(
                    f"the checkpoint uses {m}, but no utterance has text: give a segment "
                    "list with transcripts (CSV text column, subtitles) or a manifest with "
                    "a text column")
        reports: dict[str, dict] = {}
        workers = decoding_workers()
        order, overlap = self._overlap_plan(workers)
        with contextlib.ExitStack() as stack:
            if overlap is not None:
                stack.enter_context(_Overlap(corpus, *overlap))
            for m in order:
                ext = self.extractors[m]
                ext.modality = m
                reports[m] = run_extraction(corpus, None, store, ext, segments=True,
                                            progress=progress, workers=workers).to_dict()
        return {m: reports[m] for m in self.extractors}

    def _overlap_plan(self, workers: int) -> tuple[list[str], tuple | None]:
        """The order the modalities are extracted in, and what :class:`_Overlap` needs to
        decode the others' media while the first one's model runs (None: no overlap).

        With ``AVAFN_PREDICT_OVERLAP=1``, on the CPU with decoding in this process (no
        ``AVAFN_PREDICT_WORKERS``), two threads or more and a wav2vec 2.0 audio extractor among
        several media ones: the other media extractors' decoding (video frames, face
        detection) runs in a thread while wav2vec 2.0 runs on one thread fewer. Off by
        default: on a 2-core VM face detection and decoding already keep both cores busy
        (1.9 and 1.3 cores), and predict was no faster with it (12.9 and 13.4 s of extraction
        vs 12.5 and 12.4 s without)."""
        order = list(self.extractors)
        media = [m for m, e in self.extractors.items() if getattr(e, "input", "media") == "media"]
        first = next((m for m in media if callable(getattr(getattr(
            self.extractors[m], "encoder", None), "encode_layers", None))
            and hasattr(self.extractors[m].encoder, "before_batch")), None)
        others = [m for m in media if m != first]
        devices = {str(getattr(getattr(self.extractors[m], "encoder", None), "device", "cpu"))
                   for m in media}
        if (first is None or not others or workers > 0 or devices != {"cpu"}
                or torch.get_num_threads() < 2
                or os.environ.get("AVAFN_PREDICT_OVERLAP", "0").strip() != "1"):
            return order, None
        order = [first] + [m for m in order if m != first]
        return order, (self.extractors[first].encoder,
                       [self.extractors[m] for m in others])

    # ---- one clip (streaming) ----------------------------------------------------------------
    def __call__(self, path: str, start: float | None = None, end: float | None = None,
                 text: str | None = None, speaker: str | None = None,
                 previous: Sequence[tuple[str, str | None]] = ()) -> dict[str, np.ndarray | None]:
        """``previous``: the (speaker, text) of the dialogue's earlier turns, oldest first; a
        text encoder fine-tuned with context (``context_turns``) is given them as in
        extraction, so streamed vectors match the stored ones."""
        out: dict[str, np.ndarray | None] = {}
        self.last_reasons = {}
        for m, ext in self.extractors.items():
            if ext.input == "text":
                t = (text or "").strip()
                encoder = ext.encoder
                if t and encoder is not None and encoder.context_turns:
                    turns = [SimpleNamespace(speaker=s, text=x) for s, x in previous]
                    turns.append(SimpleNamespace(speaker=speaker, text=t))
                    t = encoder.inputs(turns)[-1]
                vec, _, reason = ext.process([t])[0] if t else (None, 0, "no text")
            else:
                try:
                    vec, _, reason = ext.process([ext.loader(0)(path, start, end)])[0]
                except MediaError as e:
                    vec, reason = None, e.reason
            out[m] = vec
            if vec is None:
                self.last_reasons[m] = reason
        return out


class _Overlap:
    """While open: the loaders of ``extractors`` (their decoding: frames, faces) run over the
    corpus's segments in a thread of their own, at most ``ahead`` clips ahead of their use,
    OpenCV on one thread; each extractor's ``loader`` hands out those results in turn (a clip
    it was not asked for is decoded when asked). ``encoder`` (wav2vec 2.0, run meanwhile in
    this thread) runs on one thread fewer until the decoding is done."""

    def __init__(self, corpus: Corpus, encoder: Any, extractors: list[Any],
                 ahead: int = 64) -> None:
        self.corpus, self.encoder, self.extractors, self.ahead = corpus, encoder, extractors, ahead
        self.cond = threading.Condition()
        self.results: dict[tuple, deque] = {}
        self.buffered = 0
        self.done = self.stop = False

    def __enter__(self) -> None:
        import cv2

        tasks = [t for t in _tasks(self.corpus, None, list(self.corpus.utterances()), True)
                 if t[1] is not None]
        self.threads = torch.get_num_threads()
        self.cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        self.originals = []
        jobs = []
        for k, ext in enumerate(self.extractors):
            load = ext.loader(0)
            jobs += [(k, load, t[1:]) for t in tasks]
            self.originals.append((ext, ext.__dict__.get("loader")))
            ext.loader = functools.partial(self._loader, k, load)
        torch.set_num_threads(self.threads - 1)
        self.encoder.before_batch = self._threads
        self.thread = threading.Thread(target=self._run, args=(jobs,), daemon=True,
                                       name="avafn-predict-decoding")
        self.thread.start()

    def _threads(self) -> None:
        want = self.threads if self.done else self.threads - 1
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)

    def _run(self, jobs: list) -> None:
        try:
            for k, load, args in jobs:
                with self.cond:
                    self.cond.wait_for(lambda: self.stop or self.buffered < self.ahead)
                    if self.stop:
                        return
                try:
                    got: tuple = (load(*args), None)
                except Exception as e:  # noqa: BLE001 - raised where the clip is asked for
                    got = (None, e)
                with self.cond:
                    self.results.setdefault((k, *args), deque()).append(got)
                    self.buffered += 1
                    self.cond.notify_all()
        finally:
            release_readers()
            import cv2

            cv2.setNumThreads(self.cv2_threads)
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _loader(self, k: int, load: Any, workers: int) -> Any:
        def get(path: str, start: float | None, end: float | None) -> Any:
            key = (k, path, start, end)
            with self.cond:
                # (a full buffer without this clip: it is decoded here, not waited for)
                self.cond.wait_for(lambda: key in self.results or self.done
                                   or self.buffered >= self.ahead)
                queue = self.results.get(key)
                if not queue:
                    return load(path, start, end)
                value, err = queue.popleft()
                if not queue:
                    del self.results[key]
                self.buffered -= 1
                self.cond.notify_all()
            if err is not None:
                raise err
            return value

        return get

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        self.thread.join()
        self.encoder.before_batch = None
        torch.set_num_threads(self.threads)
        for ext, original in self.originals:
            if original is None:
                del ext.loader
            else:
                ext.loader = original


__all__ = ["Featurizer", "quiet_loading"]


def decoding_workers() -> int:
    """Decoding processes for a conversation's segments: none by default (measured on a 16-core
    GPU machine, a 60 s conversation of 18 segments: 6.4 s end to end decoding in the
    predicting process, 15.6 s with 8 worker processes, whose start costs more than they
    save); ``AVAFN_PREDICT_WORKERS=N`` for long recordings of many segments."""
    raw = os.environ.get("AVAFN_PREDICT_WORKERS", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise PredictError(f"AVAFN_PREDICT_WORKERS={raw!r}: expected a whole number >= 0")
    return int(raw)
