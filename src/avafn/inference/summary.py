"""What ``predict`` found, in a few console lines: utterances, speakers, emotion counts, the
modalities used and missing (with the reasons), and every warning grouped by kind.

:func:`summarize` reads a ``predictions.json`` result (``utterances``, ``labels``,
``modalities``, and the optional ``ignored_modalities`` / ``warnings`` entries) and returns a
plain dict (also stored in the result); :func:`summary_lines` writes it for people.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from avafn.notices import Notices


def summarize(result: Mapping[str, Any]) -> dict:
    """Counts behind the console summary of one prediction result."""
    utts = list(result.get("utterances", []))
    labels = list(result.get("labels", []))
    speakers = Counter(str(u["speaker"]) for u in utts)
    emotions = Counter(str(u["label"]) for u in utts)
    modalities: dict[str, dict] = {}
    for m in result.get("modalities", []):
        reasons = Counter(u.get("missing_reason", {}).get(m, "not extracted")
                          for u in utts if not u.get("modalities", {}).get(m, False))
        modalities[m] = {"present": len(utts) - sum(reasons.values()),
                         "missing": dict(reasons.most_common())}
    order = {lab: k for k, lab in enumerate(labels)}
    return {
        "utterances": len(utts),
        "dialogues": len({u.get("dialogue_id") for u in utts}),
        "speakers": dict(speakers),  # in order of first appearance
        "emotions": {k: emotions[k] for k in sorted(emotions, key=lambda x: order.get(x, 1e9))},
        "modalities": modalities,
        "ignored_modalities": dict(result.get("ignored_modalities", {})),
        "warnings": list(result.get("warnings", [])),
    }


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items()) or "none"


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The summary as console lines (no trailing newlines)."""
    n = summary["utterances"]
    dias = summary.get("dialogues", 1)
    spk = summary["speakers"]
    lines = [f"{n} utterance(s)" + (f" in {dias} dialogues" if dias > 1 else "")
             + f", {len(spk)} speaker(s): {_counts(spk)}",
             f"emotions: {_counts(summary['emotions'])}"]
    used = []
    for m, st in summary["modalities"].items():
        part = f"{m} {st['present']}/{n}"
        if st["missing"]:
            part += " (missing: " + ", ".join(f"{r} x{k}" for r, k in st["missing"].items()) + ")"
        used.append(part)
    lines.append("modalities: " + ("; ".join(used) or "none"))
    for m, why in summary.get("ignored_modalities", {}).items():
        lines.append(f"not used: {m} ({why})")
    warns = summary.get("warnings", [])
    if warns:
        lines.append(f"warnings ({sum(w['count'] for w in warns)} in {len(warns)} kind(s)):")
        lines += [f"  {line}" for line in Notices.from_dicts(warns).lines()]
    else:
        lines.append("warnings: none")
    return lines
