"""Conversations with known turns built from real LibriSpeech voices.

``$AVAFN_REAL_DIR/librispeech`` holds real read-speech utterances (``labels.csv``:
``path,speaker``). Each speaker's utterances, leading and trailing silence removed, are laid
end to end into that speaker's *stream*; a conversation takes turns from 2-8 speakers' streams,
each turn cut at a quiet frame near a drawn length (median 3 s), separated by pauses
(0.3-1.5 s), quick replies (0-0.3 s) or overlaps (0.2-1 s of both talking), with now and then
a short backchannel ("mm-hm"-length, 0.4-1 s) of another speaker inside a turn. Each speaker
gets a gain (-8 ... +4 dB) and a share of the talk (at least 6 %); a stream that runs out
starts again (the same voice, cut at other places). Reference turns are the non-silent extent
of each piece placed (within 40 dB of its loudest 20 ms), split at its pauses of
:data:`MIN_PAUSE` (0.5 s) or more (some LibriSpeech utterances hold seconds of silence), so
overlapped speech is in the reference and long silences are not.

Speakers are split once, by a fixed seed, into a **tuning** pool (70 %) and a **held-out**
pool (30 %, with its own share of the speakers who have many utterances):
``build(seed, pool="tune")`` / ``pool="heldout"``. Everything is seeded.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SR = 16000
#: conversation lengths drawn from (seconds) and their weights
LENGTHS = (30, 45, 60, 90, 120, 180, 300, 600)
LENGTH_P = (0.16, 0.16, 0.16, 0.14, 0.12, 0.1, 0.09, 0.07)
#: pauses inside a piece this long or longer (seconds) are left out of its reference turns
MIN_PAUSE = 0.5


@dataclass(frozen=True)
class RefTurn:
    start: float
    end: float
    speaker: str


def real_dir() -> Path | None:
    d = os.environ.get("AVAFN_REAL_DIR")
    return Path(d) if d else None


def _trim(x: np.ndarray, thr_db: float = -40.0) -> np.ndarray:
    """The utterance without leading / trailing silence (20 ms frames below ``thr_db``
    relative to its loudest frame)."""
    f = 320
    n = len(x) // f
    if n == 0:
        return x
    e = 10 * np.log10(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(e > e.max() + thr_db)
    return x[on[0] * f:(on[-1] + 1) * f] if on.size else x


def speech_spans(x: np.ndarray, min_pause: float, thr_db: float = -40.0
                 ) -> list[tuple[int, int]]:
    """Sample spans of ``x`` without its pauses of ``min_pause`` seconds or more (20 ms
    frames below ``thr_db`` relative to its loudest frame, the threshold of :func:`_trim`)."""
    f = 320
    n = len(x) // f
    if n == 0 or min_pause <= 0:
        return [(0, len(x))]
    e = 10 * np.log10(np.mean(x[: n * f].reshape(n, f) ** 2, axis=1) + 1e-12)
    loud = e > e.max() + thr_db
    spans: list[tuple[int, int]] = []
    start, quiet = 0, 0
    for i, on in enumerate(loud):
        if on:
            if quiet * f >= min_pause * SR and i - quiet > start:
                spans.append((start * f, (i - quiet) * f))
                start = i
            quiet = 0
        else:
            quiet += 1
    spans.append((start * f, len(x)))
    return spans


@lru_cache(maxsize=1)
def _streams() -> dict[str, np.ndarray]:
    import soundfile as sf

    root = real_dir()
    if root is None:
        raise SystemExit("set AVAFN_REAL_DIR (with librispeech/labels.csv)")
    lib = root / "librispeech"
    parts: dict[str, list[np.ndarray]] = {}
    with open(lib / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            x, sr = sf.read(lib / row["path"], dtype="float32")
            if x.ndim > 1:
                x = x.mean(axis=1)
            assert sr == SR, (row["path"], sr)
            x = _trim(x)
            x = x / max(float(np.sqrt(np.mean(x ** 2))), 1e-6) * 0.05  # one level per speaker
            parts.setdefault(row["speaker"], []).append(x)
    return {s: np.concatenate(p) for s, p in sorted(parts.items())}


@lru_cache(maxsize=1)
def pools() -> dict[str, list[str]]:
    """Speakers of the tuning and held-out pools (fixed split, seed 1234)."""
    streams = _streams()
    rng = np.random.default_rng(1234)
    big = sorted(s for s, x in streams.items() if len(x) > 40 * SR)
    small = sorted(s for s in streams if s not in big)
    big = list(rng.permutation(big))
    small = list(rng.permutation(small))
    nb, ns = round(0.6 * len(big)), round(0.7 * len(small))
    return {"tune": sorted(big[:nb] + small[:ns]), "heldout": sorted(big[nb:] + small[ns:]),
            "big": sorted(big)}


def _quiet_cut(x: np.ndarray, at: int, search: int = 4000) -> int:
    """A sample index near ``at`` where ``x`` is quietest (20 ms frames, within ``search``)."""
    lo, hi = max(320, at - search), min(len(x) - 320, at + search)
    if hi <= lo:
        return min(max(at, 0), len(x))
    f = 320
    starts = np.arange(lo, hi, 80)
    e = np.array([np.mean(x[s - f // 2:s + f // 2] ** 2) for s in starts])
    return int(starts[int(np.argmin(e + 1e-3 * np.abs(starts - at) / search * e.max()))])


class _Reader:
    """Consecutive pieces of one speaker's stream, wrapping around."""

    def __init__(self, x: np.ndarray, rng: np.random.Generator) -> None:
        self.x, self.pos = x, int(rng.integers(0, max(1, len(x) - SR)))

    def take(self, seconds: float) -> np.ndarray:
        n = int(seconds * SR)
        if self.pos + n + 4000 > len(self.x):
            self.pos = 0
        n = min(n, len(self.x) - self.pos)
        end = _quiet_cut(self.x, self.pos + n) if n < len(self.x) - self.pos else len(self.x)
        end = max(end, self.pos + int(0.3 * SR))
        piece = _trim(self.x[self.pos:end])
        self.pos = end
        return piece


def build(seed: int, pool: str = "tune", speakers: int | None = None,
          seconds: float | None = None, min_pause: float = MIN_PAUSE
          ) -> tuple[np.ndarray, list[RefTurn], dict]:
    """One conversation: (16 kHz mono wave, reference turns, description). A piece's
    pauses of ``min_pause`` seconds or more are not in its reference turns (0: never cut)."""
    streams = _streams()
    names = pools()[pool]
    big = [s for s in pools()["big"] if s in names]
    rng = np.random.default_rng([seed, 0 if pool == "tune" else 1])
    k = speakers or int(rng.integers(2, 9))
    seconds = float(seconds or rng.choice(LENGTHS, p=LENGTH_P))
    # long talks lean on the speakers with much audio (each still cut at new places)
    n_big = min(len(big), k, int(rng.integers(0, k + 1)) if seconds < 150 else k)
    chosen = list(rng.choice(big, n_big, replace=False)) if n_big else []
    rest = [s for s in names if s not in chosen]
    chosen += list(rng.choice(rest, k - n_big, replace=False))
    chosen = [str(s) for s in rng.permutation(chosen)]
    share = rng.dirichlet(np.full(k, 2.0))
    share = np.maximum(share, 0.06)
    share /= share.sum()
    gains = 10 ** (rng.uniform(-8, 4, k) / 20)
    readers = [_Reader(streams[s], rng) for s in chosen]
    n = int(seconds * SR)
    audio = np.zeros(n + 20 * SR, np.float32)
    turns: list[RefTurn] = []
    talked = np.zeros(k)
    t = float(rng.uniform(0.2, 1.0))
    prev = -1
    prev_len = 0.0
    stats = {"pauses": 0, "quick_replies": 0, "overlaps": 0, "backchannels": 0}
    while t < seconds - 1.0:
        # the speaker furthest below their share talks next (a little randomness)
        need = share * (talked.sum() + 1e-9) - talked + rng.uniform(0, 2.0, k)
        if prev >= 0:
            need[prev] = -np.inf
        who = int(np.argmax(need))
        length = float(np.clip(rng.lognormal(np.log(3.0), 0.6), 0.8, 12.0))
        x = readers[who].take(min(length, seconds - t)) * gains[who]
        if len(x) < 0.2 * SR:
            break
        i = int(t * SR)
        audio[i:i + len(x)] += x
        turns += [RefTurn(round((i + p) / SR, 3), round((i + q) / SR, 3), chosen[who])
                  for p, q in speech_spans(x, min_pause)]
        talked[who] += len(x) / SR
        dur = len(x) / SR
        if k > 2 and dur > 3.0 and rng.random() < 0.1:  # a backchannel inside this turn
            other = int(rng.choice([j for j in range(k) if j != who]))
            b = readers[other].take(float(rng.uniform(0.4, 1.0))) * gains[other]
            j = i + int(rng.uniform(0.8, dur - 1.5) * SR)
            audio[j:j + len(b)] += b
            turns += [RefTurn(round((j + p) / SR, 3), round((j + q) / SR, 3), chosen[other])
                      for p, q in speech_spans(b, min_pause)]
            talked[other] += len(b) / SR
            stats["backchannels"] += 1
        r = rng.random()
        if r < 0.55:
            gap = float(rng.uniform(0.3, 1.5))
            stats["pauses"] += 1
        elif r < 0.8:
            gap = float(rng.uniform(0.0, 0.3))
            stats["quick_replies"] += 1
        else:
            gap = -float(rng.uniform(0.2, max(0.25, min(1.0, 0.4 * dur))))
            stats["overlaps"] += 1
        prev, prev_len = who, dur
        t += dur + gap
    del prev_len
    end = max(tr.end for tr in turns) + 0.5
    audio = audio[:int(end * SR)]
    audio += (0.0005 * rng.standard_normal(len(audio))).astype(np.float32)
    turns.sort(key=lambda r: (r.start, r.end))
    desc = {"seed": seed, "pool": pool, "speakers": k, "seconds": round(len(audio) / SR, 1),
            "turns": len(turns), **stats}
    return audio.astype(np.float32), turns, desc
