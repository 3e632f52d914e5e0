"""The ``pyannote`` diarizer: a ``pyannote.audio`` pipeline whose weights the user has on disk.

``pyannote.audio`` is not a dependency of avafn: it is imported only when this diarizer is
chosen (``--diarizer pyannote --diarizer-model DIR``), and its absence is a one-line error.
The pipeline does its own voice activity detection: the speech regions avafn found are not
passed to it. Overlapping speech is cut so that turns follow one another (the later turn
starts where the earlier one ends).

Trust: loading the pipeline is pyannote.audio's own code (its checkpoints are PyTorch files it
may unpickle), so the folder is the user's explicit choice and is never taken from a run
folder; everything avafn itself loads stays pickle-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avafn.diarize.diarization import (
    DIARIZERS,
    SAMPLE_RATE,
    Turn,
    check_speaker_counts,
    name_speakers,
)
from avafn.diarize.errors import DiarizeError


def load_pyannote_pipeline(model: str | None, device: str = "cpu") -> Any:
    """``pyannote.audio.Pipeline.from_pretrained`` on a local folder (its ``config.yaml``)."""
    if not model:
        raise DiarizeError("--diarizer pyannote needs --diarizer-model DIR: the folder of a "
                           "pyannote.audio pipeline (its config.yaml and weights)")
    path = Path(model)
    if not path.exists():
        raise DiarizeError(f"--diarizer-model {model}: folder not found")
    config = path / "config.yaml" if path.is_dir() else path
    if not config.is_file():
        raise DiarizeError(f"--diarizer-model {model}: no config.yaml (a pyannote.audio "
                           "pipeline folder holds one)")
    try:
        from pyannote.audio import Pipeline
    except ImportError:
        raise DiarizeError("--diarizer pyannote needs the 'pyannote.audio' package, which is "
                           "not installed (pip install pyannote.audio)") from None
    try:
        pipeline = Pipeline.from_pretrained(str(config))
    except Exception as e:  # noqa: BLE001 - a third-party loader: name the folder, one line
        raise DiarizeError(f"--diarizer-model {model}: pyannote.audio cannot load this "
                           f"pipeline ({type(e).__name__}: {e})") from None
    if pipeline is None:
        raise DiarizeError(f"--diarizer-model {model}: pyannote.audio returned no pipeline")
    return pipeline.to(torch.device(device))


def annotation_tracks(output: Any) -> list[tuple[float, float, str]]:
    """``(start, end, label)`` of a pipeline's output: a ``pyannote.core.Annotation`` or an
    object holding one (``exclusive_speaker_diarization`` / ``speaker_diarization``)."""
    for attr in ("exclusive_speaker_diarization", "speaker_diarization"):
        if getattr(output, attr, None) is not None:
            output = getattr(output, attr)
            break
    if not hasattr(output, "itertracks"):
        raise DiarizeError(f"the pyannote pipeline returned {type(output).__name__}, not an "
                           "annotation of speaker turns")
    return [(float(seg.start), float(seg.end), str(label))
            for seg, _, label in output.itertracks(yield_label=True)]


@DIARIZERS.register("pyannote")
class PyannoteDiarizer:
    """Adapter: avafn's diarizer interface over a ``pyannote.audio`` pipeline."""

    def __init__(self, model: str | None = None, device: str = "cpu",
                 pipeline: Any | None = None) -> None:
        self.pipeline = pipeline if pipeline is not None else load_pyannote_pipeline(model,
                                                                                     device)

    def __call__(self, wave: np.ndarray, speech: Sequence[tuple[float, float]], *,
                 num_speakers: int | None = None, min_speakers: int = 1,
                 max_speakers: int = 8) -> list[Turn]:
        lo, hi = check_speaker_counts(num_speakers, min_speakers, max_speakers)
        kw = {"num_speakers": lo} if lo == hi else {"min_speakers": lo, "max_speakers": hi}
        audio = {"waveform": torch.as_tensor(np.asarray(wave, np.float32))[None],
                 "sample_rate": SAMPLE_RATE}
        return name_speakers(annotation_tracks(self.pipeline(audio, **kw)))
