"""A video or audio file without subtitles: its utterances and speakers found in its audio
(:mod:`avafn.diarize`), written as ``segments.rttm`` beside the predictions, and their text
transcribed by speech recognition (:mod:`avafn.diarize.asr`; offline Moonshine by default)
when the run needs text."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from avafn.diarize import DiarizeError, DiarizeOptions, find_segments
from avafn.diarize.asr import NEEDS_TEXT, make_recognizer
from avafn.diarize.segment import load_audio
from avafn.inference.inputs import PredictError
from avafn.segments import Segment

#: where the segmentation found is written, in the output folder
RTTM_NAME = "segments.rttm"


def needs_text_error() -> PredictError:
    return PredictError(NEEDS_TEXT)


def segments_from_audio(video: str | os.PathLike, out_dir: str | os.PathLike,
                        options: DiarizeOptions | None = None) -> list[Segment]:
    """VAD + diarization of ``video``'s audio; the result is written to
    ``out_dir/segments.rttm`` (correct it and pass it as ``--segments`` to rerun)."""
    try:
        return find_segments(video, options, rttm=Path(out_dir) / RTTM_NAME)
    except DiarizeError as e:
        raise PredictError(str(e)) from None


def transcribe_segments(video: str | os.PathLike, segments: Sequence[Segment],
                        asr_model: str | os.PathLike | None = None, device: str = "cpu",
                        language: str | None = None, asr: str | None = None
                        ) -> tuple[list[Segment], dict]:
    """The segments with the text speech recognition hears (segments with text keep it;
    transcribed ones get ``text_source="asr"``). ``asr``: the recognizer's name (default:
    ``transformers`` with ``asr_model``, else the packaged Moonshine)."""
    try:
        rec = make_recognizer(asr, asr_model, device=device, language=language)
        out = rec.transcribe(load_audio(video), segments)
    except DiarizeError as e:
        raise PredictError(str(e)) from None
    done = [b for a, b in zip(segments, out) if a.text != b.text or b.text_source == "asr"]
    meta = {**rec.meta, "transcribed": sum(1 for b in done if b.text_source == "asr"),
            "silent": sum(1 for b in done if b.text_source != "asr")}
    return out, meta


def segmentation_meta(options: DiarizeOptions, segments: Sequence[Segment],
                      rttm: str | os.PathLike) -> dict:
    """What ``predictions.json`` records about the segmentation found."""
    return {"rttm": str(Path(rttm).resolve()), "diarizer": options.diarizer,
            "diarizer_model": options.model, "speakers": len({s.speaker for s in segments}),
            "utterances": len(segments), "num_speakers": options.num_speakers,
            "min_speakers": options.min_speakers, "max_speakers": options.max_speakers}
