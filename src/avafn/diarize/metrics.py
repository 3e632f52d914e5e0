"""Scores of a segmentation against a reference: diarization error rate (``pyannote.metrics``,
an optional dependency) and utterance boundary F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from avafn.diarize.errors import DiarizeError


def _annotation(items: Sequence[Any], uri: str) -> Any:
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, t in enumerate(items):
        ann[Segment(float(t.start), float(t.end)), i] = str(t.speaker)
    return ann


def diarization_error_rate(reference: Sequence[Any], hypothesis: Sequence[Any],
                           collar: float = 0.25, detail: bool = False,
                           duration: float | None = None) -> Any:
    """DER of ``hypothesis`` against ``reference`` (items with start / end / speaker), with
    the optimal speaker mapping and a ``collar`` (seconds, total) forgiven around reference
    boundaries, scored over ``[0, duration]`` (default: the extent of both).
    ``detail``: pyannote's components (missed, false alarm, confusion, total)."""
    try:
        from pyannote.metrics.diarization import DiarizationErrorRate
    except ImportError:
        raise DiarizeError("the diarization error rate needs 'pyannote.metrics' "
                           "(pip install pyannote.metrics)") from None
    from pyannote.core import Segment, Timeline

    ref, hyp = _annotation(reference, "x"), _annotation(hypothesis, "x")
    if duration is None:
        duration = max([t.end for t in [*reference, *hypothesis]], default=0.0)
    uem = Timeline([Segment(0.0, float(duration))], uri="x")
    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    return metric(ref, hyp, uem=uem, detailed=detail)


def boundary_f1(reference: Sequence[Any], hypothesis: Sequence[Any], tolerance: float = 0.25
                ) -> dict[str, float]:
    """Precision, recall and F1 of utterance boundaries (every start and end): a hypothesis
    boundary is a hit when matched one-to-one to a reference boundary within ``tolerance``."""
    from scipy.optimize import linear_sum_assignment

    ref = np.array([x for t in reference for x in (t.start, t.end)], float)
    hyp = np.array([x for t in hypothesis for x in (t.start, t.end)], float)
    hits = 0
    if len(ref) and len(hyp):
        dist = np.abs(ref[:, None] - hyp[None, :])
        cost = np.where(dist <= tolerance, dist, 1e6)
        r, c = linear_sum_assignment(cost)
        hits = int((dist[r, c] <= tolerance).sum())
    p = hits / len(hyp) if len(hyp) else 0.0
    rc = hits / len(ref) if len(ref) else 0.0
    return {"precision": p, "recall": rc, "f1": 2 * p * rc / (p + rc) if p + rc else 0.0}
