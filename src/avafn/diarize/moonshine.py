"""The default offline speech recognizer: Moonshine base English, as shipped by the PyPI
package ``moonshine-cpp`` (MIT; the model files and its own ONNX Runtime are in the wheel).

The native calls (:mod:`avafn.moonshine_native`) run in a worker process
(``python -m avafn.moonshine_native``, clips passed as a ``.npz`` file), a fresh one for
every :data:`WORKER_SECONDS` of audio: the library's memory grows with every call (about
17 MB per second of audio transcribed) and is returned only when its process ends. A crash of
the native library ends the worker, not avafn: it is reported as one error line. ONNX Runtime
uses one thread per core the process may run on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np

from avafn import moonshine_native
from avafn.diarize.asr import RECOGNIZERS, Recognizer
from avafn.diarize.errors import DiarizeError
from avafn.diarize.vad import SAMPLE_RATE

#: seconds of audio one worker process transcribes before a fresh one takes over (its
#: memory peaks near 2 GB with the default chunks)
WORKER_SECONDS = 60.0


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
        clips = [np.asarray(c, np.float32).reshape(-1) for c in clips]
        if self.in_process:
            return self._native(moonshine_native.transcribe, clips)
        out: list[str] = [""] * len(clips)
        for run in batches(clips):
            for i, t in zip(run, self._worker([clips[i] for i in run])):
                out[i] = t
        return out

    @staticmethod
    def _worker(clips: list[np.ndarray]) -> list[str]:
        """``clips`` transcribed by a fresh ``python -m avafn.moonshine_native`` process."""
        with tempfile.TemporaryDirectory(prefix="avafn-asr-") as d:
            src, dst = os.path.join(d, "clips.npz"), os.path.join(d, "texts.json")
            np.savez(src, **{f"c{k}": c for k, c in enumerate(clips)})
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(Path(moonshine_native.__file__).resolve().parents[1])] +
                [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
            proc = subprocess.run([sys.executable, "-m", "avafn.moonshine_native", src, dst],
                                  check=False, capture_output=True, text=True, env=env)
            if proc.returncode == 0:
                with open(dst, encoding="utf-8") as f:
                    texts = json.load(f)
                if isinstance(texts, list) and len(texts) == len(clips):
                    return [str(t) for t in texts]
            if proc.returncode == 3:
                raise DiarizeError(proc.stderr.strip().splitlines()[-1])
            seconds = sum(len(c) for c in clips) / SAMPLE_RATE
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1][:200]
            raise DiarizeError(
                f"speech recognition (moonshine) failed on {len(clips)} utterance(s) of "
                f"{seconds:.1f} s (worker exit status {proc.returncode}: {last}); give "
                "--segments with text, or --asr-model DIR")

    @property
    def meta(self) -> dict:
        return {"asr": self.name, "asr_model": "moonshine base-en (moonshine-cpp "
                f"{version('moonshine-cpp')})", "language": "en"}
