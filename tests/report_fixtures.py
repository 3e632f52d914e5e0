"""Generated conversations for the HTML report tests (3 speakers with hostile names)."""

from __future__ import annotations

import numpy as np

LABELS = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
#: names and texts that would break a page that does not escape them; if any script they
#: carry runs, it sets ``data-pwned`` on <body>
HOSTILE_SPEAKERS = [
    "</script><script>document.body.setAttribute('data-pwned','1')</script>",
    "<!--<script>",
    "Zoë \"Q\" O'Neil & <img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">",
]
HOSTILE_TEXTS = [
    "<!-- <script> is not a comment",
    "]]></title><svg onload=\"document.body.setAttribute('data-pwned','3')\">",
    "line\u2028separator and \u2029paragraph & ampersand",
    "a" * 300,
]


def make_views(n: int, seed: int = 0, timed: bool = True,
               speakers: list[str] | None = None) -> list[dict]:
    """One dialogue of ``n`` utterances in the shape ``predict`` hands to ``render_report``.

    Utterance t attends mostly to the previous utterance of its own speaker (so the heat map
    has a visible pattern); every 7th utterance has no face (video missing, with a reason).
    """
    rng = np.random.default_rng(seed)
    names = speakers or HOSTILE_SPEAKERS
    who = [int(rng.integers(len(names))) for _ in range(n)]
    att = np.zeros((n, n))
    for t in range(1, n):
        logits = rng.normal(0, 0.3, size=t)
        own = [k for k in range(t) if who[k] == who[t]]
        if own:
            logits[own[-1]] += 3.0
        att[t, :t] = np.exp(logits) / np.exp(logits).sum()
    rows, clock = [], 0.3
    for t in range(n):
        p = rng.dirichlet(np.full(len(LABELS), 0.6))
        k = int(p.argmax())
        dur = float(rng.uniform(0.6, 4.0))
        video = t % 7 != 3
        text = HOSTILE_TEXTS[t % len(HOSTILE_TEXTS)] if t % 5 == 1 else f"Utterance {t + 1} text."
        rows.append({
            "dialogue_id": "d0", "turn": t,
            "start": round(clock, 3) if timed else None,
            "end": round(clock + dur, 3) if timed else None,
            "speaker": names[who[t]], "speaker_idx": who[t], "text": text,
            "label": LABELS[k], "confidence": float(p[k]),
            "probabilities": {lab: float(v) for lab, v in zip(LABELS, p)},
            "modalities": {"audio": True, "video": video, "text": True},
            "missing_reason": {} if video else {"video": "no face detected"},
            # every 4th speaker guessed from the audio; sources one subtitle cue per 4 lines
            "speaker_source": "diarization" if t % 4 == 1 else "tag",
            "speaker_confidence": round(0.4 + 0.5 * float(rng.random()), 3) if t % 4 == 1
            else None,
            "text_source": "asr" if t % 9 == 4 else "subtitle",
            "source": f"talk.srt:{4 * t + 1}", "window": 0,
            "warnings": (["speaker guessed from the audio (diarization)"] if t % 4 == 1 else [])
            + ([] if video else ["video missing: no face detected"]),
        })
        clock += dur + float(rng.uniform(0.05, 0.8))
    return [{"title": f"conversation <{n}> & co", "rows": rows, "attention": att}]


#: per-class dev F1 (percent) of a model whose fear and disgust are rarely right
DEV_F1 = {"neutral": 72.0, "joy": 55.1, "surprise": 48.0, "anger": 40.2, "sadness": 31.3,
          "disgust": 12.0, "fear": 16.0}


def report_extra(views: list[dict], bidirectional: bool = True) -> dict:
    """What ``predict`` hands ``render_report`` besides the rows: dev F1, the run's direction,
    the grouped warnings (every place), links to the CSV and the batch index."""
    guessed = [r["source"] for v in views for r in v["rows"]
               if r.get("speaker_source") == "diarization"]
    return {"f1": DEV_F1, "bidirectional": bidirectional, "csv": "predictions.csv",
            "index": "../index.html", "files": ["csv", "srt", "vtt"],
            "warnings": [{"warning": "speakers of untagged cues guessed from the audio",
                          "count": len(guessed), "where": guessed},
                         {"warning": "markup dropped from cues (<i>, <font>, {\\an8}, ...)",
                          "count": 2, "where": ["talk.srt:1", "talk.srt:9"]}]}
