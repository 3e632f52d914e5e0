"""Inference on new conversations: inputs → features → the run's models → predictions.

Modules, each depending only on those above it:

- :mod:`avafn.inference.inputs`: a video + segment list, or clips + manifest, as a corpus
  (and one utterance at a time for streaming); :class:`PredictError`.
- :mod:`avafn.inference.featurizer`: :class:`Featurizer`, the run's extractors rebuilt from
  its recorded settings (a whole corpus into a feature store, or one clip).
- :mod:`avafn.inference.predictor`: :class:`Predictor` (a run's models built once; a call per
  conversation gives :class:`Predictions`, every utterance at once, seeds averaged; ``save``
  writes ``predictions.json`` / ``.csv`` / ..., ``report.html``; ``stream()`` on the same
  models).
- :mod:`avafn.inference.offline`: :func:`predict`, the same in one call.
- :mod:`avafn.inference.streaming`: :class:`Streamer` (utterance by utterance through a
  causal model), :func:`stream_predictions` and :func:`write_stream` (``stream.jsonl`` and
  the console lines, as each result comes).
"""

from __future__ import annotations

from avafn.inference.featurizer import Featurizer
from avafn.inference.inputs import (
                                    PredictError,
                                    corpus_from_clips,
                                    corpus_from_segments,
                                    iter_stream_items,
                                    media_duration,
                                    video_segments,
)
from avafn.inference.offline import predict
from avafn.inference.predictor import Predictions, Predictor, run_models
from avafn.inference.streaming import (
                                    Streamer,
                                    StreamingError,
                                    StreamResult,
                                    check_streamable,
                                    stream_predictions,
)

__all__ = ["Featurizer", "PredictError", "Predictions", "Predictor", "StreamResult", "Streamer", "StreamingError",
           "check_streamable", "corpus_from_clips", "corpus_from_segments", "iter_stream_items",
           "media_duration", "predict", "run_models", "stream_predictions", "video_segments"]
