"""The diarization options (plain dataclasses, no torch): what ``avafn predict --help``
needs to show their defaults without loading the networks."""

from __future__ import annotations

from dataclasses import dataclass, field

from avafn.diarize.errors import DiarizeError


@dataclass
class VADConfig:
    """Settings of :meth:`avafn.diarize.vad.SileroVAD.speech` (those of silero's
    ``get_speech_timestamps``)."""

    threshold: float = 0.5
    min_speech: float = 0.25  # seconds
    min_silence: float = 0.05  # silero's default 0.1 s joins quick replies into one region
    pad: float = 0.03


@dataclass
class DiarizeOptions:
    """How to find utterances and speakers (the ``predict`` options of the same names)."""

    diarizer: str = "resemblyzer"
    model: str | None = None  # the diarizer's weights (pyannote: a pipeline folder)
    num_speakers: int | None = None
    min_speakers: int = 1
    max_speakers: int = 8
    merge_gap: float = 1.0
    max_utterance: float = 20.0
    device: str = "cpu"
    vad: VADConfig = field(default_factory=VADConfig)

    def check(self) -> None:
        # the registry's module loads the networks' code
        from avafn.diarize.diarization import DIARIZERS, check_speaker_counts

        check_speaker_counts(self.num_speakers, self.min_speakers, self.max_speakers)
        if self.diarizer not in DIARIZERS:
            raise DiarizeError(f"--diarizer {self.diarizer!r}: unknown (known: "
                               f"{', '.join(DIARIZERS.names())})")
        if self.max_utterance <= 1.0 or self.merge_gap < 0:
            raise DiarizeError("max_utterance must exceed 1 s and merge_gap be >= 0")


__all__ = ["DiarizeOptions", "VADConfig"]
