"""Speech-to-text for utterances without a transcript: a transformers
``automatic-speech-recognition`` pipeline (e.g. a Whisper or wav2vec 2.0 CTC checkpoint)
loaded from a local folder, with ``trust_remote_code=False``.

::

    asr = Transcriber("models/whisper-small")
    segs = asr.transcribe(wave, segs)        # text filled where it was missing
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avafn.diarize.errors import DiarizeError
from avafn.diarize.vad import SAMPLE_RATE
from avafn.segments import Segment

#: the one-line answer when a run needs text that nobody gave
NEEDS_TEXT = ("the run uses text, but no utterance has text: give --segments with text "
              "(CSV text column, SRT / WebVTT cues), or --asr-model DIR (a local "
              "speech-recognition model, e.g. a Whisper checkpoint) to transcribe the audio")


class Transcriber:
    """A local speech-recognition model; ``transcribe`` fills the text of segments."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu",
                 language: str | None = None, batch_size: int = 8) -> None:
        path = Path(model_dir)
        if not path.is_dir():
            raise DiarizeError(f"--asr-model {model_dir}: not a folder (a speech-recognition "
                               "model saved with save_pretrained, e.g. a Whisper checkpoint)")
        if not (path / "config.json").is_file():
            raise DiarizeError(f"--asr-model {model_dir}: no config.json (a transformers "
                               "model folder holds one)")
        import torch
        from transformers import pipeline

        try:
            self.pipe = pipeline("automatic-speech-recognition", model=str(path),
                                 device=torch.device(device), trust_remote_code=False)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DiarizeError(f"--asr-model {model_dir}: cannot load a speech-recognition "
                               f"model from it ({first})") from None
        self.model_dir = str(path)
        self.language = language
        self.batch_size = batch_size

    def texts(self, clips: Sequence[np.ndarray]) -> list[str]:
        """The transcription of each 16 kHz mono clip."""
        if not clips:
            return []
        kw: dict = {}
        if self.language:
            kw["generate_kwargs"] = {"language": self.language, "task": "transcribe"}
        if max(len(c) for c in clips) > 30 * SAMPLE_RATE:
            kw["chunk_length_s"] = 30
        inputs = [{"raw": np.asarray(c, np.float32), "sampling_rate": SAMPLE_RATE}
                  for c in clips]
        out = self.pipe(inputs, batch_size=self.batch_size, **kw)
        return [str(o.get("text", "")).strip() for o in out]

    def transcribe(self, wave: np.ndarray, segments: Sequence[Segment],
                   only_missing: bool = True) -> list[Segment]:
        """``segments`` with the text heard in ``wave`` (16 kHz mono) between their times;
        with ``only_missing``, segments that have text keep it. Silence gives no text."""
        todo = [i for i, s in enumerate(segments) if not (only_missing and s.text)]
        clips = [wave[int(segments[i].start * SAMPLE_RATE):int(segments[i].end * SAMPLE_RATE)]
                 for i in todo]
        out = list(segments)
        for i, text in zip(todo, self.texts(clips)):
            out[i] = dataclasses.replace(out[i], text=text or None)
        return out

    @property
    def meta(self) -> dict:
        return {"asr_model": self.model_dir, "language": self.language}
