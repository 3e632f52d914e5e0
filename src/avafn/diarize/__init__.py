"""Utterances and speakers from audio alone (voice activity detection, diarization), and
their text (speech recognition) when a run needs text and no transcript is given.

- :mod:`avafn.diarize.options`: the options and their checks (no torch).
- :mod:`avafn.diarize.vad`: Silero VAD (weights shipped by ``silero-vad``).
- :mod:`avafn.diarize.diarization`: diarizers (``resemblyzer`` default, ``pyannote``
  plug-in for the user's own pipeline) in the ``DIARIZERS`` registry.
- :mod:`avafn.diarize.segment`: the whole chain and RTTM output; speakers for given
  segments come from :func:`avafn.segments.assign_speakers` with ``speaker_turns``.
- :mod:`avafn.diarize.asr`: a transformers speech-recognition model from a local folder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from avafn.diarize.errors import DiarizeError
from avafn.diarize.options import DiarizeOptions

if TYPE_CHECKING:
    from avafn.diarize.diarization import DIARIZERS, Turn
    from avafn.diarize.segment import diarize, find_segments, speaker_turns, write_rttm

#: names loaded on first use: their modules load torch and the networks' code, which
#: ``avafn predict --help`` (DiarizeOptions' defaults) does not need
_LAZY = {"DIARIZERS": "diarization", "Turn": "diarization", "diarize": "segment",
         "find_segments": "segment", "speaker_turns": "segment", "write_rttm": "segment"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"avafn.diarize.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DIARIZERS", "DiarizeError", "DiarizeOptions", "Turn", "diarize",
           "find_segments", "speaker_turns", "write_rttm"]
