"""Offline prediction lives in :mod:`avafn.inference`; this module re-exports its public names."""

from avafn.inference import (
                             Featurizer,
                             PredictError,
                             corpus_from_clips,
                             corpus_from_segments,
                             iter_stream_items,
                             media_duration,
                             predict,
                             run_models,
                             stream_predictions,
)

__all__ = ["Featurizer", "PredictError", "corpus_from_clips", "corpus_from_segments",
           "iter_stream_items", "media_duration", "predict", "run_models", "stream_predictions"]
