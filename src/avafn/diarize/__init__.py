"""Utterances and speakers from audio alone (voice activity detection, diarization), and
their text (speech recognition) when a run needs text and no transcript is given.

- :mod:`avafn.diarize.vad`: Silero VAD (weights shipped by ``silero-vad``).
- :mod:`avafn.diarize.diarization`: diarizers (``resemblyzer`` default, ``pyannote``
  plug-in for the user's own pipeline) in the ``DIARIZERS`` registry.
- :mod:`avafn.diarize.segment`: the whole chain and RTTM output; speakers for given
  segments come from :func:`avafn.segments.assign_speakers` with ``speaker_turns``.
- :mod:`avafn.diarize.asr`: a transformers speech-recognition model from a local folder.
"""

from avafn.diarize.diarization import DIARIZERS, Turn
from avafn.diarize.errors import DiarizeError
from avafn.diarize.segment import (
    DiarizeOptions,
    diarize,
    find_segments,
    speaker_turns,
    write_rttm,
)

__all__ = ["DIARIZERS", "DiarizeError", "DiarizeOptions", "Turn", "diarize",
           "find_segments", "speaker_turns", "write_rttm"]
