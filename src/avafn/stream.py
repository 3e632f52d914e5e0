"""Streaming lives in :mod:`avafn.inference.streaming`; this module re-exports its public names."""

from avafn.inference.streaming import (
                                       ClipFeaturizer,
                                       Streamer,
                                       StreamingError,
                                       StreamResult,
                                       check_streamable,
)

__all__ = ["ClipFeaturizer", "StreamResult", "Streamer", "StreamingError", "check_streamable"]
