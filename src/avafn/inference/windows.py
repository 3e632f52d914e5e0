"""Dialogue windows: a long conversation, or one with more speakers than the model has party
slots, cut into windows that each fit the model.

The model keeps one party state per speaker slot (``n_parties``, 9 for MELD) and a dialogue's
speakers take slots in order of first appearance. A conversation with more speakers (a whole
episode, a meeting) is cut into consecutive **windows**: each holds at most ``n_parties``
speakers and at most ``max_utterances`` utterances, and each is predicted as a dialogue of its
own (slots by first appearance within the window). A window is cut at the longest pause among
the last half of the utterances that still fit, so that cuts fall where the talk pauses and
the set of speakers changes rather than mid-exchange.

Why fresh windows rather than carried state: the party GRU's state belongs to a slot, and
reusing a slot for another person would hand that person someone else's state; the global
(context) GRU's state could be carried, but the model was trained on dialogues that start
fresh (MELD scenes), so a window starts fresh as those did. A window's utterances are only
attended to within the window.

``segment.window`` / the ``window`` of each prediction row is the window index (0 = first).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from avafn.segments import Segment

if TYPE_CHECKING:
    from avafn.model.base import ConversationModel


class Turn(Protocol):
    """What windows are planned from: a segment or an utterance."""

    @property
    def speaker(self) -> str | None: ...

    @property
    def start(self) -> float | None: ...

    @property
    def end(self) -> float | None: ...

#: utterances one window may hold (the context attention is quadratic in it)
DEFAULT_MAX_UTTERANCES = 200
#: ``AVAFN_MAX_PARTIES``: lowers the party slots used per window (for a trial; never raises)
ENV_MAX_PARTIES = "AVAFN_MAX_PARTIES"


def party_limit(n_parties: int) -> int:
    """The model's party slots, lowered by ``$AVAFN_MAX_PARTIES`` when that is set lower."""
    env = os.environ.get(ENV_MAX_PARTIES, "").strip()
    if env.isdigit() and int(env) >= 1:
        return min(n_parties, int(env))
    return n_parties


def plan_windows(items: Sequence[Turn], n_parties: int,
                 max_utterances: int = DEFAULT_MAX_UTTERANCES) -> list[int]:
    """Window index of each item (objects with ``speaker`` and optional ``start`` / ``end``,
    in dialogue order); see the module docstring."""
    if n_parties < 1 or max_utterances < 1:
        raise ValueError("n_parties and max_utterances must be at least 1")
    n = len(items)
    out = [0] * n
    i0, w = 0, 0
    while i0 < n:
        seen: set = set()
        j = i0
        while j < n and j - i0 < max_utterances:
            spk = items[j].speaker
            if spk not in seen and len(seen) >= n_parties:
                break
            seen.add(spk)
            j += 1
        cut = j if j >= n else _best_cut(items, i0, j)
        for k in range(i0, cut):
            out[k] = w
        i0, w = cut, w + 1
    return out


def _pause(items: Sequence[Turn], k: int) -> float:
    """The silence before item ``k`` (0 when times are not known or the items overlap)."""
    a, b = items[k - 1], items[k]
    end, start = a.end, b.start
    if end is None or start is None:
        return 0.0
    return max(0.0, float(start) - float(end))


def _best_cut(items: Sequence[Turn], i0: int, j: int) -> int:
    """Where to end the window ``items[i0:j]`` (all of which fit): the longest pause before
    one of its last half (the latest such on ties; ``j`` itself is a candidate)."""
    lo = max(i0 + 1, i0 + (j - i0 + 1) // 2)
    best, best_pause = j, -1.0
    for k in range(lo, j + 1):
        p = _pause(items, k) if k < len(items) else 0.0
        if p >= best_pause:
            best, best_pause = k, p
    return best


def assign_windows(segs: Sequence[Segment], n_parties: int,
                   max_utterances: int = DEFAULT_MAX_UTTERANCES) -> list[Segment]:
    """The segments with ``window`` set (:func:`plan_windows`)."""
    win = plan_windows(segs, n_parties, max_utterances)
    return [s if s.window == k else replace(s, window=k) for s, k in zip(segs, win)]


def window_speaker_indices(items: Sequence[Turn], windows: Sequence[int]) -> list[int]:
    """Each item's party slot within its window (first appearance order)."""
    out: list[int] = []
    slots: dict = {}
    prev = None
    for it, w in zip(items, windows):
        if w != prev:
            slots, prev = {}, w
        out.append(slots.setdefault(it.speaker, len(slots)))
    return out


def model_parties(models: Sequence[ConversationModel]) -> int:
    """The fewest party slots among ``models`` (their ``cfg.n_parties``), lowered by
    ``$AVAFN_MAX_PARTIES``."""
    n = min((int(m.cfg.n_parties) for m in models), default=10**9)
    return party_limit(n)


def run_windowed(models: Sequence[Any], dialogue: Any, run_one: Callable[[Any], tuple],
                 modalities: Sequence[str], max_utterances: int = DEFAULT_MAX_UTTERANCES
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[int]]:
    """``run_one`` (a dialogue -> probabilities, attention, present flags, as
    :func:`avafn.inference.offline.run_models`) window by window: probabilities (T, C),
    context attention (T, T; zero across windows), present flags, and each utterance's window."""
    utts = list(dialogue.utterances)
    win = plan_windows(utts, model_parties(models), max_utterances)
    slots = window_speaker_indices(utts, win)
    n = len(utts)
    prob: np.ndarray | None = None
    att = np.zeros((n, n), np.float32)
    present: dict[str, np.ndarray] = {}
    for w in range(max(win) + 1 if win else 0):
        idx = [i for i in range(n) if win[i] == w]
        sub = replace(dialogue, utterances=[replace(utts[i], speaker_idx=slots[i]) for i in idx])
        p, a, pr = run_one(sub)
        if prob is None:
            prob = np.zeros((n, p.shape[1]), p.dtype)
            present = {m: np.zeros(n, bool) for m in modalities}
        prob[idx] = p
        att[np.ix_(idx, idx)] = a
        for m in modalities:
            present[m][idx] = pr[m]
    assert prob is not None, "a dialogue without utterances"
    return prob, att, present, win


__all__ = ["DEFAULT_MAX_UTTERANCES", "assign_windows", "model_parties", "party_limit",
           "plan_windows", "run_windowed", "window_speaker_indices"]
