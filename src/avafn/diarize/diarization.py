"""Who speaks when: diarizers behind one interface, in a registry.

A diarizer is called on 16 kHz mono audio and the speech regions found by voice activity
detection and returns speaker turns (:class:`Turn`, non-overlapping, sorted)::

    diarizer = DIARIZERS.get("resemblyzer")(model=None, device="cpu")
    turns = diarizer(wave, speech, num_speakers=None, min_speakers=1, max_speakers=8)

Built in:

- ``resemblyzer`` (default, offline): the speaker encoder shipped by the ``resemblyzer``
  package (its weights install with it) embeds 1 s windows every 0.25 s inside speech; each
  window's embedding is averaged with its neighbours in the same speech region; the windows
  are clustered agglomeratively (average linkage, cosine distance) up to a distance
  ``threshold`` (0.35), clusters holding less than ``min_cluster`` (1 %) of the speech join
  their nearest neighbour. When that finds several voices and the spectrum of a refined
  cosine affinity (Wang et al., *Speaker Diarization with LSTM*, ICASSP 2018; pruning
  auto-tuned after Park et al., IEEE SPL 2019) shows no gap after that many, its largest
  eigengap may raise the count: generated voices lie closer together than the threshold.
  The threshold, the smallest cluster and that gap were chosen on conversations built from
  real LibriSpeech voices of a tuning speaker pool (``benchmarks/bench_diarize.py``). The
  count is
  the number of clusters (``num_speakers`` forces it) and comes with a
  :class:`CountEstimate` (how close the nearest merge was to the threshold); each turn has a
  ``confidence`` from its windows' margin between their own and the next speaker.
- ``pyannote``: a ``pyannote.audio`` pipeline from a local folder (``model=DIR``, the user's
  own weights; the package is imported only then).

Plug-ins register under the entry point group ``avafn.diarizers``: the object is called as
``factory(model=..., device=...)`` and must return a callable as above.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from avafn.diarize.errors import DiarizeError, package_file
from avafn.registry import Registry

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Turn:
    """A stretch of speech by one speaker, ``[start, end)`` seconds; ``confidence`` in [0, 1]
    how sure the speaker is (None: not measured)."""

    start: float
    end: float
    speaker: str
    confidence: float | None = None


class Diarizer(Protocol):
    def __call__(self, wave: np.ndarray, speech: Sequence[tuple[float, float]], *,
                 num_speakers: int | None = None, min_speakers: int = 1,
                 max_speakers: int = 8) -> list[Turn]: ...


#: name -> factory(model: str | None, device: str) -> Diarizer
DIARIZERS: Registry[Callable[..., Diarizer]] = Registry(
    "diarizer", entry_points="avafn.diarizers",
    builtin=("avafn.diarize.diarization", "avafn.diarize.pyannote_pipeline"))


def check_speaker_counts(num_speakers: int | None, min_speakers: int, max_speakers: int
                         ) -> tuple[int, int]:
    """``(lo, hi)`` bounds on the number of speakers; a bad combination is a DiarizeError."""
    if num_speakers is not None:
        if num_speakers < 1:
            raise DiarizeError(f"--num-speakers must be at least 1, got {num_speakers}")
        return num_speakers, num_speakers
    if min_speakers < 1 or max_speakers < min_speakers:
        raise DiarizeError(f"--min-speakers {min_speakers} / --max-speakers {max_speakers}: "
                           "expected 1 <= min <= max")
    return min_speakers, max_speakers


# ----------------------------------------------------------------------------- resemblyzer
class _VoiceEncoder(nn.Module):
    """resemblyzer's speaker encoder (3-layer LSTM on 40 mel bands, 256-d unit embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(mels)
        e = torch.relu(self.linear(h[-1]))
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _resemblyzer_weights() -> str:
    return package_file("resemblyzer", "pretrained.pt", "resemblyzer", "the default diarizer")


def _mel_filters() -> np.ndarray:
    import librosa  # a resemblyzer dependency

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=400, n_mels=40)


def mel_frames(wave: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """resemblyzer's (power) mel spectrogram, 100 frames a second: (n_frames, 40)."""
    x = torch.as_tensor(np.asarray(wave, np.float32))
    spec = torch.stft(x, 400, 160, window=torch.hann_window(400), center=True,
                      pad_mode="constant", return_complex=True).abs() ** 2
    return (torch.as_tensor(filters) @ spec).T.numpy()


def normalize_volume(wave: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Raise the volume to ``target_dbfs`` (never lower it), as resemblyzer's preprocessing."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if len(wave) else 0.0
    if rms <= 0:
        return wave
    gain = target_dbfs - 20 * np.log10(rms)
    return wave * (10 ** (gain / 20)) if gain > 0 else wave


def windows_in_speech(speech: Sequence[tuple[float, float]], length: float, hop: float
                      ) -> list[tuple[float, float]]:
    """Windows of ``length`` every ``hop`` seconds covering each region (the whole region
    when it is shorter); the last window of a region ends at its end."""
    out: list[tuple[float, float]] = []
    for a, b in speech:
        if b - a <= length:
            out.append((a, b))
            continue
        starts = list(np.arange(a, b - length + 1e-6, hop))
        if starts[-1] + length < b - 1e-6:
            starts.append(b - length)
        out += [(float(s), float(s) + length) for s in starts]
    return out


def smooth_embeddings(emb: np.ndarray, spans: Sequence[tuple[float, float]],
                      speech: Sequence[tuple[float, float]], width: int = 1) -> np.ndarray:
    """Each window's embedding averaged with its ``width`` neighbours on either side inside
    the same speech region (more context per decision, fewer stray labels); unit norm."""
    if width <= 0 or len(emb) == 0:
        return emb
    sp = np.asarray(spans, float).reshape(-1, 2)
    out = emb.astype(np.float64, copy=True)
    for a, b in speech:
        idx = np.flatnonzero((sp[:, 0] >= a - 1e-6) & (sp[:, 1] <= b + 1e-6))
        if len(idx) < 2:
            continue
        c = np.cumsum(np.vstack([np.zeros((1, emb.shape[1])), emb[idx]]), axis=0)
        j = np.arange(len(idx))
        lo, hi = np.maximum(j - width, 0), np.minimum(j + width + 1, len(idx))
        out[idx] = (c[hi] - c[lo]) / (hi - lo)[:, None]
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(
        np.float32)


def refined_affinity(emb: np.ndarray, keep: float = 0.2) -> np.ndarray:
    """Cosine affinity refined for spectral clustering: each row keeps its ``keep`` largest
    entries (others shrunk 100 x), symmetrised by max, diffused (A Aᵀ), row-max normalised,
    symmetrised by mean."""
    a = emb @ emb.T
    n = len(a)
    np.fill_diagonal(a, 0.0)
    p = max(2, round(keep * n))
    if n > p:
        thr = np.sort(a, axis=1)[:, -p][:, None]
        a = np.where(a >= thr, a, 0.01 * a)
    a = np.maximum(a, a.T)
    a = np.clip(a, 0.0, None)
    a = a @ a.T
    a = a / np.maximum(a.max(axis=1, keepdims=True), 1e-12)
    return (a + a.T) / 2


def eigengap_count(affinity: np.ndarray, lo: int, hi: int) -> tuple[int, np.ndarray]:
    """Number of clusters by the largest gap between consecutive eigenvalues of the
    normalised Laplacian, searched in ``[lo, hi]``; also returns the sorted eigenvalues."""
    n = len(affinity)
    d = np.maximum(affinity.sum(axis=1), 1e-12)
    lap = np.eye(n) - affinity / np.sqrt(np.outer(d, d))
    ev = np.sort(np.linalg.eigvalsh(lap))
    hi = min(hi, n - 1)
    if hi <= lo:
        return max(1, min(lo, n)), ev
    gaps = np.diff(ev[: hi + 1])  # gaps[k-1] = ev[k] - ev[k-1]: the gap after k clusters
    ks = np.arange(lo, hi + 1)
    k = int(ks[np.argmax(gaps[ks - 1])])
    return k, ev


#: row pruning fractions tried by :func:`_tuned_affinity`
KEEP_FRACTIONS = (0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3)


def _tuned_affinity(emb: np.ndarray, lo: int, hi: int, min_neighbours: int = 4
                    ) -> tuple[np.ndarray, int]:
    """The refined affinity and speaker count at the row-pruning fraction that makes the
    eigengap clearest: the smallest ratio fraction / normalised gap (the auto-tuning of
    Park et al., *Auto-Tuning Spectral Clustering for Speaker Diarization Using Normalized
    Maximum Eigengap*, IEEE SPL 2019); each row keeps at least ``min_neighbours``."""
    n = len(emb)
    keeps = [k for k in KEEP_FRACTIONS if round(k * n) >= min(min_neighbours, n - 1)]
    best: tuple[float, np.ndarray, int] | None = None
    for keep in keeps or KEEP_FRACTIONS[-1:]:
        aff = refined_affinity(emb, keep)
        k, ev = eigengap_count(aff, lo, hi)
        gaps = np.diff(ev)
        gap = gaps[k - 1] if 1 <= k <= len(gaps) else 0.0
        ratio = keep / max(float(gap) / max(float(ev[-1]), 1e-9), 1e-9)
        if best is None or ratio < best[0]:
            best = (ratio, aff, k)
    assert best is not None
    return best[1], best[2]


def merge_small_clusters(emb: np.ndarray, labels: np.ndarray, weight: np.ndarray,
                         min_fraction: float, min_clusters: int = 1) -> np.ndarray:
    """Merge, smallest first, every cluster holding less than ``min_fraction`` of the total
    ``weight`` into the cluster of the nearest centroid, per item; relabel 0..k-1."""
    labels = labels.copy()
    while True:
        names = np.unique(labels)
        if len(names) <= max(1, min_clusters):
            break
        tot = np.array([weight[labels == c].sum() for c in names])
        i = int(np.argmin(tot))
        if tot[i] >= min_fraction * weight.sum():
            break
        others = [c for c in names if c != names[i]]
        cent = np.stack([emb[labels == c].mean(axis=0) for c in others])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True)
        for j in np.flatnonzero(labels == names[i]):
            labels[j] = others[int(np.argmax(cent @ emb[j]))]
    return np.unique(labels, return_inverse=True)[1]


@dataclass(frozen=True)
class CountEstimate:
    """How many speakers the clustering found and how sure it is: ``margin`` is the cosine
    distance between the stopping threshold and the nearest merge height (the merge made last
    or refused first); ``confidence`` = ``margin`` / :data:`SURE_MARGIN`, at most 1; when
    below 1, ``alternative`` is the count on the other side of that nearest merge."""

    count: int
    confidence: float
    alternative: int | None = None
    given: bool = False

    @property
    def sure(self) -> bool:
        return self.given or self.confidence >= 1.0

    def describe(self) -> str:
        """One line for the console."""
        n = f"{self.count} speaker{'s' * (self.count != 1)}"
        if self.given:
            return f"{n} (as given)"
        if self.sure or self.alternative is None:
            return f"{n} (clear)"
        return (f"{n} (not sure: {self.alternative} is almost as likely; if you know how many "
                f"people speak, give --num-speakers N)")


#: a merge height this far (cosine distance) from the threshold or further: a sure count
SURE_MARGIN = 0.03


#: the eigengap may raise the count only when the threshold's count has a gap this small
#: in the spectrum (eigenvalues of the normalised Laplacian, 0 ... 2): there the threshold
#: cut clusters that the affinity does not separate
SPECTRAL_GAP = 0.06


def cluster_embeddings(emb: np.ndarray, weight: np.ndarray, lo: int, hi: int,
                       min_fraction: float = 0.01, threshold: float = 0.35
                       ) -> tuple[np.ndarray, CountEstimate]:
    """Speaker labels of unit embeddings: agglomerative clustering (average linkage, cosine
    distance) stopped at ``threshold``, clusters with less than ``min_fraction`` of the
    ``weight`` merged into their nearest neighbour. When that finds several voices and the
    spectrum of the refined affinity (:func:`_tuned_affinity`) shows no gap after that many
    (below :data:`SPECTRAL_GAP`), its eigengap count may raise the count (voices closer than
    the threshold, as generated espeak-ng voices are; the estimate is then marked not sure).
    The count is held within ``[lo, hi]``."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(emb)
    if n == 0:
        return np.zeros(0, int), CountEstimate(0, 1.0)
    if n < 3 or hi == 1:
        return np.zeros(n, int), CountEstimate(1, 1.0, given=hi == lo)
    tree = linkage(np.asarray(emb, np.float64), "average", metric="cosine")
    heights = tree[:, 2]

    def cut(k: int | None) -> np.ndarray:
        raw = (fcluster(tree, t=threshold, criterion="distance") if k is None
               else fcluster(tree, t=k, criterion="maxclust")) - 1
        return merge_small_clusters(emb, raw, weight, min_fraction, min_clusters=lo)

    labels = cut(None)
    k_tree = k = int(labels.max()) + 1
    if lo < hi and 2 <= k < hi and n > 3:  # voices closer than the threshold?
        aff, k_eig = _tuned_affinity(emb, 2, hi)
        ev = eigengap_count(aff, 2, hi)[1]
        if k_eig > k and ev[k] - ev[k - 1] < SPECTRAL_GAP:
            k = k_eig
    if k != k_tree or not lo <= k <= hi:
        labels = cut(min(max(k, lo), hi))
    found = int(labels.max()) + 1
    if lo == hi:
        return labels, CountEstimate(found, 1.0, given=True)
    if found != k_tree:  # the two counts disagree: not sure
        alt = k_tree if lo <= k_tree <= hi else None
        return labels, CountEstimate(found, 0.0, alt)
    # the merge just below the threshold joined k+1 -> k clusters; the next one k -> k-1
    below = heights[heights <= threshold]
    above = heights[heights > threshold]
    d_below = threshold - below.max() if len(below) else np.inf
    d_above = above.min() - threshold if len(above) else np.inf
    margin = float(min(d_below, d_above))
    alt = found + 1 if d_below <= d_above else found - 1
    alt_ok = lo <= alt <= hi and alt >= 1
    conf = min(1.0, margin / SURE_MARGIN)
    return labels, CountEstimate(found, round(conf, 3), alt if alt_ok and conf < 1 else None)


def label_margins(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per item: cosine similarity to its own cluster's centroid minus that to the nearest
    other centroid (1 when there is one cluster)."""
    k = int(labels.max()) + 1 if len(labels) else 0
    if k <= 1:
        return np.ones(len(labels))
    cent = np.stack([emb[labels == c].mean(axis=0) for c in range(k)])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    sim = emb @ cent.T
    own = sim[np.arange(len(labels)), labels]
    sim[np.arange(len(labels)), labels] = -np.inf
    return own - sim.max(axis=1)


#: a margin (cosine) between a window's own and next speaker this large: confidence 1
CONFIDENT_MARGIN = 0.2


@DIARIZERS.register("resemblyzer")
class ResemblyzerDiarizer:
    """Windowed speaker embeddings + agglomerative clustering (see the module docstring).
    After a call, ``last_estimate`` holds the :class:`CountEstimate`."""

    def __init__(self, model: str | None = None, device: str = "cpu", window: float = 1.0,
                 hop: float = 0.25, min_window: float = 1.0, min_cluster: float = 0.01,
                 threshold: float = 0.35, smooth: int = 1, min_turn: float = 0.5,
                 max_cluster_windows: int = 1200) -> None:
        path = model or _resemblyzer_weights()
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise DiarizeError(f"{path}: cannot load the speaker encoder weights ({e})") from None
        self.encoder = _VoiceEncoder()
        state = {k: v for k, v in ckpt.get("model_state", ckpt).items()
                 if k.startswith(("lstm.", "linear."))}
        try:
            self.encoder.load_state_dict(state)
        except RuntimeError as e:
            raise DiarizeError(f"{path}: not a resemblyzer speaker encoder ({e})") from None
        self.device = device
        self.encoder.to(device).eval()
        self.filters = _mel_filters()
        self.window, self.hop, self.min_window = window, hop, min_window
        self.min_cluster, self.min_turn = min_cluster, min_turn
        self.threshold, self.smooth = threshold, smooth
        self.max_cluster_windows = max_cluster_windows
        self.last_estimate: CountEstimate | None = None

    @torch.inference_mode()
    def embed(self, wave: np.ndarray, spans: Sequence[tuple[float, float]]) -> np.ndarray:
        """Unit speaker embeddings (n, 256) of the given ``(start, end)`` spans."""
        mel = mel_frames(normalize_volume(wave), self.filters)
        out = np.zeros((len(spans), 256), np.float32)
        by_len: dict[int, list[int]] = {}
        for i, (a, b) in enumerate(spans):
            by_len.setdefault(max(1, round((b - a) * 100)), []).append(i)
        for n, idx in by_len.items():
            for c in range(0, len(idx), 64):
                part = idx[c:c + 64]
                batch = np.zeros((len(part), n, 40), np.float32)
                for r, i in enumerate(part):
                    m = mel[round(spans[i][0] * 100):][:n]
                    batch[r, :len(m)] = m
                e = self.encoder(torch.from_numpy(batch).to(self.device))
                out[part] = e.cpu().numpy()
        return out

    def __call__(self, wave: np.ndarray, speech: Sequence[tuple[float, float]], *,
                 num_speakers: int | None = None, min_speakers: int = 1,
                 max_speakers: int = 8) -> list[Turn]:
        lo, hi = check_speaker_counts(num_speakers, min_speakers, max_speakers)
        speech = [(a, b) for a, b in speech if b > a]
        spans = windows_in_speech(speech, self.window, self.hop)
        if not spans:
            return []
        return self.assign(speech, spans, self.embed(wave, spans), lo, hi)

    def assign(self, speech: Sequence[tuple[float, float]], spans: Sequence[tuple[float, float]],
               emb: np.ndarray, lo: int, hi: int) -> list[Turn]:
        """Speaker turns from the windows' embeddings (clustering, then turns), each with
        its confidence (the mean margin of its windows, :func:`label_margins`, over
        :data:`CONFIDENT_MARGIN`, at most 1)."""
        emb = smooth_embeddings(emb, spans, speech, self.smooth)
        dur = np.array([b - a for a, b in spans])
        reliable = np.flatnonzero(dur >= min(self.min_window, dur.max()) - 1e-6)
        if len(reliable) > self.max_cluster_windows:  # long recordings: an even subsample
            pick = np.linspace(0, len(reliable) - 1, self.max_cluster_windows)
            reliable = reliable[np.unique(np.round(pick).astype(int))]
        labels = np.full(len(spans), -1)
        labels[reliable], self.last_estimate = cluster_embeddings(
            emb[reliable], dur[reliable], lo, hi, self.min_cluster, self.threshold)
        rest = labels < 0
        if rest.any():  # short regions, windows left out: the nearest speaker centroid
            k = labels[reliable].max() + 1
            cent = np.stack([emb[reliable][labels[reliable] == c].mean(axis=0)
                             for c in range(k)])
            labels[rest] = np.argmax(emb[rest] @ cent.T, axis=1)
        conf = np.clip(label_margins(emb, labels) / CONFIDENT_MARGIN, 0.0, 1.0)
        turns = label_turns(speech, spans, labels, self.min_turn)
        mids = np.asarray(spans, float).reshape(-1, 2).mean(axis=1)
        out = []
        for a, b, lab in turns:
            inside = (mids >= a) & (mids < b) & (labels == lab)
            c = float(conf[inside].mean()) if inside.any() else None
            out.append((a, b, lab, c))
        return name_speakers(out)


# ----------------------------------------------------------------------------- windows -> turns
def label_turns(speech: Sequence[tuple[float, float]], spans: Sequence[tuple[float, float]],
                labels: np.ndarray, min_turn: float = 0.5, step: float = 0.05
                ) -> list[tuple[float, float, int]]:
    """Turns ``(start, end, label)`` from labelled windows: each ``step`` of a speech region
    takes the label most windows covering it have; runs shorter than ``min_turn`` inside a
    region join their neighbour."""
    k = int(labels.max()) + 1 if len(labels) else 1
    out: list[tuple[float, float, int]] = []
    spans_arr = np.asarray(spans, float).reshape(-1, 2)
    for a, b in speech:
        n = max(1, int(np.ceil((b - a) / step)))
        centres = a + (np.arange(n) + 0.5) * (b - a) / n
        votes = np.zeros((n, k))
        inside = np.flatnonzero((spans_arr[:, 0] < b) & (spans_arr[:, 1] > a))
        for i in inside:
            cover = (centres >= spans_arr[i, 0]) & (centres < spans_arr[i, 1])
            votes[cover, labels[i]] += 1
        lab = votes.argmax(axis=1)
        if len(inside) and not votes.any(axis=1).all():  # not covered: the nearest window
            mid = spans_arr[inside].mean(axis=1)
            for j in np.flatnonzero(~votes.any(axis=1)):
                lab[j] = labels[inside[np.argmin(np.abs(mid - centres[j]))]]
        runs = _runs(lab)
        runs = _absorb_short(runs, min_turn / ((b - a) / n))
        edges = a + np.array([r[0] for r in runs] + [n]) * (b - a) / n
        out += [(float(edges[i]), float(edges[i + 1]), int(r[2])) for i, r in enumerate(runs)]
    return out


def _runs(lab: np.ndarray) -> list[tuple[int, int, int]]:
    runs, s = [], 0
    for i in range(1, len(lab) + 1):
        if i == len(lab) or lab[i] != lab[s]:
            runs.append((s, i, int(lab[s])))
            s = i
    return runs


def _absorb_short(runs: list[tuple[int, int, int]], min_len: float) -> list[tuple[int, int, int]]:
    runs = list(runs)
    while len(runs) > 1:
        lens = [e - s for s, e, _ in runs]
        i = int(np.argmin(lens))
        if lens[i] >= min_len:
            break
        j = i - 1 if i == len(runs) - 1 or (i > 0 and lens[i - 1] >= lens[i + 1]) else i + 1
        s, e = min(runs[i][0], runs[j][0]), max(runs[i][1], runs[j][1])
        runs[min(i, j)] = (s, e, runs[j][2])
        del runs[max(i, j)]
        merged: list[tuple[int, int, int]] = []
        for r in runs:
            if merged and merged[-1][2] == r[2]:
                merged[-1] = (merged[-1][0], r[1], r[2])
            else:
                merged.append(r)
        runs = merged
    return runs


def name_speakers(turns: Sequence[tuple]) -> list[Turn]:
    """``SPEAKER_00``, ``SPEAKER_01``, ... in order of first appearance; sorted, and any
    overlap trimmed (a turn starts where the previous one ends). Items are ``(start, end,
    label)`` or ``(start, end, label, confidence)``."""
    names: dict[Any, str] = {}
    out: list[Turn] = []
    for t in sorted(turns, key=lambda t: (t[0], t[1])):
        a, b, lab = t[:3]
        conf = t[3] if len(t) > 3 and t[3] is not None else None
        if out and a < out[-1].end:
            a = out[-1].end
        if b - a <= 1e-3:
            continue
        name = names.setdefault(lab, f"SPEAKER_{len(names):02d}")
        out.append(Turn(round(float(a), 3), round(float(b), 3), name,
                        None if conf is None else round(float(conf), 3)))
    return out
