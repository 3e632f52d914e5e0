"""The default offline speech recognizer: Moonshine base English, as shipped by the PyPI
package ``moonshine-cpp`` (MIT; the model files and its own ONNX Runtime are in the wheel).

The native calls (:mod:`avafn.moonshine_native`) run in a worker process, replaced after
every :data:`WORKER_SECONDS` of audio: the library's memory grows with every call (about
17 MB per second of audio transcribed) and is returned only when its process ends. A crash of
the native library ends the worker, not avafn: it is reported as one error line. ONNX Runtime
uses one thread per core the process may run on.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from avafn import moonshine_native
from avafn.diarize.asr import RECOGNIZERS, Recognizer
from avafn.diarize.errors import DiarizeError
from avafn.diarize.vad import SAMPLE_RATE

#: seconds of audio one worker process transcribes before a fresh one takes over
WORKER_SECONDS = 120.0


def batches(clips: Sequence[np.ndarray], seconds: float = WORKER_SECONDS
            ) -> list[list[int]]:
    """Indices of ``clips`` in runs of at most ``seconds`` of audio (a longer clip alone)."""
    out: list[list[int]] = []
    total = seconds * SAMPLE_RATE
    for i, c in enumerate(clips):
        if out and sum(len(clips[j]) for j in out[-1]) + len(c) <= total:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@RECOGNIZERS.register("moonshine")
class MoonshineRecognizer(Recognizer):
    """Moonshine base English (offline, packaged): ``texts`` transcribes 16 kHz clips."""

    name = "moonshine"

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu",
                 language: str | None = None, in_process: bool = False) -> None:
        if model is not None:
            raise DiarizeError("--asr moonshine uses the model shipped in moonshine-cpp; "
                               "--asr-model DIR is for --asr transformers")
        if language not in (None, "en", "english", "English"):
            raise DiarizeError(f"--asr-language {language}: the packaged Moonshine model "
                               "transcribes English only; for other languages give "
                               "--asr-model DIR (a local Whisper checkpoint)")
        self.in_process = in_process
        if in_process:
            self._native(moonshine_native.load)

    @staticmethod
    def _native(fn, *args):
        try:
            return fn(*args)
        except moonshine_native.NativeError as e:
            raise DiarizeError(str(e)) from None

    def texts(self, clips: Sequence[np.ndarray]) -> list[str]:
        """The transcription of each 16 kHz mono clip (long clips in chunks)."""
        clips = [np.asarray(c, np.float32) for c in clips]
        if self.in_process:
            return self._native(moonshine_native.transcribe, clips)
        out: list[str] = [""] * len(clips)
        ctx = multiprocessing.get_context("spawn")
        for run in batches(clips):
            try:
                with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                    texts = pool.submit(moonshine_native.transcribe,
                                        [clips[i] for i in run]).result()
            except moonshine_native.NativeError as e:
                raise DiarizeError(str(e)) from None
            except BrokenProcessPool:
                raise DiarizeError(
                    f"speech recognition (moonshine) crashed on {len(run)} utterance(s) of "
                    f"{sum(len(clips[i]) for i in run) / SAMPLE_RATE:.1f} s (out of memory?); "
                    "give --segments with text, or --asr-model DIR") from None
            for i, t in zip(run, texts):
                out[i] = t
        return out

    @property
    def meta(self) -> dict:
        from importlib.metadata import version

        return {"asr": self.name, "asr_model": "moonshine base-en (moonshine-cpp "
                f"{version('moonshine-cpp')})", "language": "en"}
