"""Streaming emotion recognition: utterances arrive one at a time, each gets its emotion at once.

::

    from avafn.inference import Streamer
    s = Streamer("runs/causal")                 # a run trained with bidirectional=False
    r = s.push({"audio": a_vec, "video": None}, speaker="Ross")   # None: modality missing
    r.label, r.probabilities, r.latency_ms
    r = s.push("clip_0002.mp4", speaker="Rachel")                 # raw clip: features extracted
    s.reset()                                                     # a new conversation

The state of the forward-only recurrence (context, party states, emotion state, the CAM's
key/value history, the attention scores) is carried between calls by ``model.step``; the
result of utterance t equals the causal full-dialogue pass over utterances 1..t.

With several seeds in the run, every seed's model keeps its own state and the reported
probabilities are the mean of the seeds' softmax outputs (as in :func:`avafn.inference.offline.predict`).
A bidirectional checkpoint sees the future of the dialogue and cannot stream: it is refused.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avafn.demo import TWIN
from avafn.errors import UserError
from avafn.inference.featurizer import Featurizer, quiet_loading
from avafn.inference.summary import printable
from avafn.model.base import ConversationModel
from avafn.run import Run
from avafn.segments import format_time

#: clip_featurizer(clip path, start, end, text) -> {modality: vector (D,) or None when missing}
ClipFeaturizer = Callable[[str, float | None, float | None, str | None],
                      Mapping[str, np.ndarray | None]]


#: the streamed results, one JSON line each, in the output folder
STREAM_FILE = "stream.jsonl"


class StreamingError(UserError):
    """A checkpoint that cannot stream, or an utterance that cannot be pushed."""


@dataclass(frozen=True)
class StreamResult:
    """The prediction for one pushed utterance."""

    turn: int  # 0-based position in the conversation
    speaker: str
    speaker_idx: int  # party index, in order of first appearance
    label: str
    probabilities: dict[str, float]  # label -> mean probability over the run's seeds
    latency_ms: float  # wall time of push(): feature extraction (clips) + model step
    #: (loading the extractors on the first pushed clip is not counted)
    model_ms: float  # the model step(s) alone
    present: dict[str, bool]  # modality -> present for this utterance
    context_attention: list[float] = field(default_factory=list)  # over turns 0..turn-1
    #: modality -> why it is missing, for a pushed clip (the run's featurizer says why)
    missing_reason: dict[str, str] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, "speaker": self.speaker, "speaker_idx": self.speaker_idx,
                "label": self.label, "confidence": self.confidence,
                "probabilities": self.probabilities, "latency_ms": self.latency_ms,
                "model_ms": self.model_ms, "present": self.present,
                "context_attention": self.context_attention,
                "missing_reason": self.missing_reason}


def check_streamable(model_cfg: Mapping[str, Any], where: str = "the checkpoint") -> None:
    """Raise :class:`StreamingError` unless the model config is forward-only (causal)."""
    if model_cfg.get("bidirectional", True):
        raise StreamingError(
            f"{where} was trained bidirectional (bidirectional=True): its predictions use the "
            "future of the dialogue, so it cannot stream. Train a causal (streaming) "
            "checkpoint with the model setting bidirectional=False (CLI: avafn train ... "
            "--model '{\"bidirectional\": false}'; API: ModelSpec(config={'bidirectional': "
            "False})), or predict offline without --stream.")


def causal_twin(run_dir: str | os.PathLike) -> Path | None:
    """The causal twin ``avafn demo`` trains beside its run (``runs/text-causal`` next to
    ``runs/text``), when there is one."""
    twin = Path(run_dir).parent / TWIN
    return twin if twin != Path(run_dir) and (twin / "config.json").is_file() else None


class Streamer:
    """Utterance-by-utterance prediction with a forward-only AVAFN (see the module docstring).

    ``run``: a run folder, or a model (``AVAFN`` or a list of them, e.g. one per seed, in eval
    mode or not: they are put in eval mode). ``labels`` names the classes when models are
    given directly (default: the run's labels, or ``"0".."C-1"``). ``featurizer`` turns a
    clip into features; by default, for a run folder, one built from the run's extractor
    settings (:class:`avafn.inference.featurizer.Featurizer`), with ``extractor_models`` overriding where the
    pretrained extractors live (``{"audio": wav2vec folder, "video": DAN checkpoint,
    "text": sentence encoder}``). ``models`` (with a run): the run's models already loaded,
    and ``make_featurizer`` (a function of nothing returning the featurizer, called on the
    first pushed clip): its extractors, shared with an offline
    :class:`avafn.inference.predictor.Predictor` (``Predictor.stream()``) instead of built
    again.
    """

    def __init__(self,
                 run: str | os.PathLike | Run | ConversationModel | Sequence[ConversationModel],
                 device: str = "cpu", labels: Sequence[str] | None = None,
                 featurizer: ClipFeaturizer | None = None,
                 extractor_models: Mapping[str, str] | None = None,
                 progress: bool = True, *, models: Sequence[ConversationModel] | None = None,
                 make_featurizer: Callable[[], ClipFeaturizer] | None = None) -> None:
        self.device = torch.device(device)
        self.run_dir: Path | None = None
        self.run: Run | None = None
        self.progress = progress
        if isinstance(run, (str, os.PathLike, Run)):
            self.run = run if isinstance(run, Run) else Run.open(run)
            self.run_dir = self.run.path
            try:
                check_streamable({"bidirectional": self.run.bidirectional},
                                 f"run {self.run_dir}")
            except StreamingError as e:
                twin = causal_twin(self.run_dir)
                if twin is None:
                    raise
                raise StreamingError(f"run {self.run_dir} was trained bidirectional and cannot "
                                     f"stream; its causal twin can: avafn predict {twin} "
                                     "--stream ...") from e
            models = list(models) if models is not None else self.run.models(device)
            labels = labels or self.run.labels
        else:
            models = [run] if isinstance(run, ConversationModel) else list(run)
        if not models:
            raise StreamingError("no model to stream with")
        for i, m in enumerate(models):
            if not isinstance(m, ConversationModel):
                raise StreamingError(f"model {i} ({type(m).__name__}) is not a "
                                     "ConversationModel (avafn.model.base): it cannot stream")
            check_streamable({"bidirectional": not m.causal},
                             f"model {i}" if self.run_dir is None else f"run {self.run_dir}")
        self.models: list[ConversationModel] = [m.to(self.device).eval() for m in models]
        # each model's step (AVAFN: on a snapshot of its weights, merged and pre-transposed)
        self._steps = [m.frozen_step() for m in self.models]
        cfg0 = self.models[0].cfg
        self.modalities: tuple[str, ...] = tuple(cfg0.modalities)
        self.widths: dict[str, int] = {m: int(cfg0.input_dims[m]) for m in self.modalities}
        self.n_parties = int(cfg0.n_parties)
        self.labels = list(labels) if labels else [str(i) for i in range(cfg0.n_classes)]
        if len(self.labels) != cfg0.n_classes:
            raise StreamingError(f"{len(self.labels)} labels given for a model with "
                                 f"{cfg0.n_classes} classes")
        self._featurizer = featurizer
        self._make_featurizer = make_featurizer
        self._model_paths = dict(extractor_models or {})
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the conversation: the next push is turn 0 of a new one."""
        self.states = [m.init_state(1, self.device) for m in self.models]
        self.speakers: dict[str, int] = {}
        self.history: list[StreamResult] = []
        self._turns: list[tuple[str, str | None]] = []  # (speaker, text) of the turns so far

    @property
    def featurizer(self) -> ClipFeaturizer:
        if self._featurizer is None and self._make_featurizer is not None:
            self._featurizer = self._make_featurizer()
        if self._featurizer is None:
            if self.run is None:
                raise StreamingError("pushing a clip needs a featurizer (or a run folder whose "
                                     "extractor settings build one); pass featurizer=")
            with quiet_loading(not self.progress):
                self._featurizer = Featurizer.from_run(self.run, str(self.device),
                                                       self._model_paths)
        return self._featurizer

    # ------------------------------------------------------------------ push
    def _tensors(self, feats: Mapping[str, Any], turn: int
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, bool]]:
        unknown = sorted(set(feats) - set(self.modalities))
        if unknown:
            raise StreamingError(f"utterance {turn}: modality {unknown} is not used by the model "
                                 f"(it uses {list(self.modalities)})")
        x, p, present = {}, {}, {}
        for m in self.modalities:
            v = feats.get(m)
            if v is None:  # absent or None: the modality is missing for this utterance
                x[m] = torch.zeros(1, self.widths[m], device=self.device)
                present[m] = False
            else:
                try:
                    arr = torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1)
                except (TypeError, ValueError):
                    raise StreamingError(f"utterance {turn}: {m} vector must be a list of "
                                         f"numbers, got {str(v)[:80]}") from None
                if arr.shape[0] != self.widths[m]:
                    raise StreamingError(f"utterance {turn}: {m} vector of width {arr.shape[0]}, "
                                         f"the model expects {self.widths[m]}")
                if not torch.isfinite(arr).all():
                    raise StreamingError(f"utterance {turn}: {m} vector has NaN/inf")
                x[m] = arr.to(self.device).unsqueeze(0)
                present[m] = True
            p[m] = torch.tensor([present[m]], device=self.device)
        return x, p, present

    @torch.no_grad()
    def push(self, item: Mapping[str, Any] | str | os.PathLike | None, speaker: str,
             start: float | None = None, end: float | None = None,
             text: str | None = None) -> StreamResult:
        """Predict the emotion of the next utterance, spoken by ``speaker``.

        ``item``: features ``{modality: vector (D,) or None}`` (an absent modality counts as
        missing), or the path of a clip (with ``start`` / ``end`` seconds to cut a segment
        of a longer file, and ``text`` its transcript for a run that uses text), whose
        features are extracted with the run's settings; or ``None`` with ``text`` for a run
        trained on text alone (no media at all).
        """
        if item is None:
            media = [m for m in self.modalities if m != "text"]
            if media:
                raise StreamingError(
                    f"utterance {len(self.history)}: no clip, but the run uses "
                    f"{', '.join(self.modalities)}: give a clip (or features); text alone "
                    "serves only a run trained on text alone")
            item = ""  # the text extractor reads ``text`` only
        if isinstance(item, (str, os.PathLike)):
            _ = self.featurizer  # built on first use; loading models is not part of latency
        t0 = time.perf_counter()
        turn = len(self.history)
        speaker = str(speaker)
        if speaker not in self.speakers and len(self.speakers) >= self.n_parties:
            raise StreamingError(
                f"utterance {turn}: speaker {speaker!r} would be party {len(self.speakers) + 1}, "
                f"but the model knows at most {self.n_parties} parties per dialogue "
                f"(seen: {list(self.speakers)})")
        reasons: dict[str, str] = {}
        if isinstance(item, (str, os.PathLike)):
            fz = self.featurizer
            if isinstance(fz, Featurizer):  # the run's own: earlier turns for context encoders
                feats = dict(fz(str(item), start, end, text, speaker=speaker,
                                previous=list(self._turns)))
                reasons = dict(fz.last_reasons)
            else:
                feats = dict(fz(str(item), start, end, text))
        else:
            feats = dict(item)
        x, p, present = self._tensors(feats, turn)
        idx = self.speakers.get(speaker, len(self.speakers))
        spk = torch.tensor([idx], dtype=torch.long, device=self.device)
        t1 = time.perf_counter()
        probs, attn = [], []
        new_states = []
        for step, state in zip(self._steps, self.states):
            _, st, info = step(state, x, p, spk)
            new_states.append(st)
            probs.append(info["probs"][0].float())
            attn.append(info["context_attention"][0].float())
        prob = torch.stack(probs).mean(0).cpu().numpy()
        att = torch.stack(attn).mean(0).cpu().numpy() if turn else np.zeros(0)
        t2 = time.perf_counter()
        # commit the new state only once every model has stepped (an error leaves it intact)
        self.states = new_states
        self.speakers.setdefault(speaker, idx)
        k = int(prob.argmax())
        res = StreamResult(turn=turn, speaker=speaker, speaker_idx=idx, label=self.labels[k],
                           probabilities={lab: float(v) for lab, v in zip(self.labels, prob)},
                           latency_ms=1000 * (t2 - t0), model_ms=1000 * (t2 - t1),
                           present=present, context_attention=[float(a) for a in att],
                           missing_reason={m: r for m, r in reasons.items()
                                           if not present.get(m, True)})
        self.history.append(res)
        self._turns.append((speaker, text))
        return res


def stream_predictions(run_dir: str | os.PathLike | Run, items: Iterator[dict],
                       device: str = "cpu", extractor_models: Mapping[str, str] | None = None,
                       progress: bool = True) -> Iterator[dict]:
    """Push ``items`` (see :func:`iter_stream_items`) one by one through a
    :class:`Streamer`; yields each result as a dict (with latency)."""
    s = Streamer(run_dir, device=device, extractor_models=extractor_models, progress=progress)
    for n, it in enumerate(items):
        if it.get("new_dialogue") and n > 0:
            s.reset()
        item = it["features"] if "features" in it else it.get("clip")
        r = s.push(item, str(it["speaker"]), start=it.get("start"), end=it.get("end"),
                   text=it.get("text"))
        d = r.to_dict()
        d.update({k: it.get(k) for k in ("start", "end", "text", "source", "dialogue_id",
                                          "speaker_source", "speaker_confidence",
                                          "text_source", "window")
                  if it.get(k) is not None})
        yield d


def stream_line(r: Mapping[str, Any]) -> str:
    """One streamed result as a console line: turn, times, speaker, label, confidence,
    latency."""
    when = (f"{format_time(r['start'])}-{format_time(r['end'])} "
            if r.get("start") is not None and r.get("end") is not None else "")
    return (f"#{r['turn'] + 1:<3d} {when}{printable(r['speaker']):<12s} {r['label']:<10s} "
            f"{r['confidence']:.2f}  {r['latency_ms']:7.1f} ms")


def write_stream(results: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike | None = None,
                 echo: Callable[[str], None] | None = None, jsonl: bool = False) -> list[float]:
    """Write each streamed result (:func:`stream_predictions`) the moment it comes: a JSON line
    appended to ``out_dir/stream.jsonl`` (flushed, so a reader follows it live), and a line to
    ``echo``: the JSON line with ``jsonl``, else :func:`stream_line`. Returns the latencies
    (ms); :func:`latency_summary` says them in one line."""
    lat: list[float] = []
    sink = None
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        sink = open(Path(out_dir) / STREAM_FILE, "w")  # noqa: SIM115 - closed below
    try:
        for r in results:
            lat.append(float(r["latency_ms"]))
            line = json.dumps(r, allow_nan=False)  # never NaN: not JSON
            if sink is not None:
                sink.write(line + "\n")
                sink.flush()
            if echo is not None:
                echo(line if jsonl else stream_line(r))
    finally:
        if sink is not None:
            sink.close()
    return lat


def latency_summary(latencies: Sequence[float]) -> str:
    """``N utterances streamed; latency per utterance: median M ms, max X ms``."""
    lat = sorted(latencies)
    return (f"{len(lat)} utterances streamed; latency per utterance: median "
            f"{lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms")


__all__ = ["STREAM_FILE", "ClipFeaturizer", "StreamResult", "Streamer", "StreamingError",
           "check_streamable", "latency_summary", "stream_line", "stream_predictions",
           "write_stream"]
