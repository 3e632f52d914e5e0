"""Who speaks when: diarizers behind one interface, in a registry.

A diarizer is called on 16 kHz mono audio and the speech regions found by voice activity
detection and returns speaker turns (:class:`Turn`, non-overlapping, sorted)::

    diarizer = DIARIZERS.get("resemblyzer")(model=None, device="cpu")
    turns = diarizer(wave, speech, num_speakers=None, min_speakers=1, max_speakers=8)

Built in:

- ``resemblyzer`` (default, offline): the speaker encoder shipped by the ``resemblyzer``
  package (its weights install with it) embeds 1 s windows every 0.25 s inside speech; the
  windows are clustered by spectral clustering on a refined cosine affinity (row-wise
  pruning, symmetrisation, diffusion, as in Wang et al., *Speaker Diarization with LSTM*,
  ICASSP 2018; the pruning fraction chosen per recording as the one with the clearest
  normalised eigengap, after Park et al., IEEE SPL 2019); the number of speakers is the
  largest eigengap of the normalised Laplacian within ``[min_speakers, max_speakers]`` (or ``num_speakers`` when given); clusters holding
  less than ``min_cluster`` of the speech are merged into the nearest other one, and clusters
  whose centroids are more similar than ``merge_above`` (cosine; one voice's halves score
  about 0.9 and more, different voices less than 0.85) are joined.
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
    """A stretch of speech by one speaker, ``[start, end)`` seconds."""

    start: float
    end: float
    speaker: str


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


def merge_similar_clusters(emb: np.ndarray, labels: np.ndarray, threshold: float,
                           min_clusters: int = 1) -> np.ndarray:
    """Merge the two clusters whose centroids are most similar (cosine) while that
    similarity exceeds ``threshold``; relabel 0..k-1."""
    labels = np.unique(labels, return_inverse=True)[1]
    while labels.max() + 1 > max(1, min_clusters):
        cent = np.stack([emb[labels == c].mean(axis=0) for c in range(labels.max() + 1)])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True)
        sim = cent @ cent.T
        np.fill_diagonal(sim, -1.0)
        i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
        if sim[i, j] <= threshold:
            break
        labels[labels == max(i, j)] = min(i, j)
        labels = np.unique(labels, return_inverse=True)[1]
    return labels


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


def cluster_embeddings(emb: np.ndarray, weight: np.ndarray, lo: int, hi: int,
                       min_fraction: float = 0.05, merge_above: float = 0.86) -> np.ndarray:
    """Speaker labels of unit embeddings (see the module docstring)."""
    from sklearn.cluster import SpectralClustering

    n = len(emb)
    if n == 0:
        return np.zeros(0, int)
    if n < 3 or hi == 1:
        return np.zeros(n, int)
    aff, k = _tuned_affinity(emb, lo, hi)
    if k <= 1:
        return np.zeros(n, int)
    labels = SpectralClustering(k, affinity="precomputed", random_state=0,
                                assign_labels="cluster_qr").fit_predict(aff)
    labels = merge_small_clusters(emb, labels, weight, min_fraction, min_clusters=lo)
    return merge_similar_clusters(emb, labels, merge_above, min_clusters=lo)


@DIARIZERS.register("resemblyzer")
class ResemblyzerDiarizer:
    """Windowed speaker embeddings + spectral clustering (see the module docstring)."""

    def __init__(self, model: str | None = None, device: str = "cpu", window: float = 1.0,
                 hop: float = 0.25, min_window: float = 1.0, min_cluster: float = 0.05,
                 merge_above: float = 0.86, min_turn: float = 0.5,
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
        self.merge_above = merge_above
        self.max_cluster_windows = max_cluster_windows

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
        emb = self.embed(wave, spans)
        dur = np.array([b - a for a, b in spans])
        reliable = np.flatnonzero(dur >= min(self.min_window, dur.max()) - 1e-6)
        if len(reliable) > self.max_cluster_windows:  # long recordings: an even subsample
            pick = np.linspace(0, len(reliable) - 1, self.max_cluster_windows)
            reliable = reliable[np.unique(np.round(pick).astype(int))]
        labels = np.full(len(spans), -1)
        labels[reliable] = cluster_embeddings(emb[reliable], dur[reliable], lo, hi,
                                              self.min_cluster, self.merge_above)
        rest = labels < 0
        if rest.any():  # short regions, windows left out: the nearest speaker centroid
            k = labels[reliable].max() + 1
            cent = np.stack([emb[reliable][labels[reliable] == c].mean(axis=0)
                             for c in range(k)])
            labels[rest] = np.argmax(emb[rest] @ cent.T, axis=1)
        return name_speakers(label_turns(speech, spans, labels, self.min_turn))


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


def name_speakers(turns: Sequence[tuple[float, float, Any]]) -> list[Turn]:
    """``SPEAKER_00``, ``SPEAKER_01``, ... in order of first appearance; sorted, and any
    overlap trimmed (a turn starts where the previous one ends)."""
    names: dict[Any, str] = {}
    out: list[Turn] = []
    for a, b, lab in sorted(turns, key=lambda t: (t[0], t[1])):
        if out and a < out[-1].end:
            a = out[-1].end
        if b - a <= 1e-3:
            continue
        name = names.setdefault(lab, f"SPEAKER_{len(names):02d}")
        out.append(Turn(round(float(a), 3), round(float(b), 3), name))
    return out
